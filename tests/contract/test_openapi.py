"""The OpenAPI document is exact: schemathesis finds no disagreement between it and the API.

`siaga dev`'s composed app (tests.security's populated rig, on a real uvicorn server, so ingest's
device routes go through their ASGI fast path as in production) is run through `schemathesis run`
with every check, once per kind of token:

- a device token, on the field-event routes: the only routes it opens (on the others it is an
  unknown token, 401, which the operator and admin runs check through `ignored_auth`);
- an operator token, on the routes it may call: the incident routes and /me (the admin routes
  answer it 403, the device routes 401, Telegram's webhook looks at its own header only;
  tests/security/test_access_matrix.py checks each route with each kind of token);
- the admin token of SIAGA_ADMIN_TOKEN, on every other route (the admin routes and Telegram's
  webhook). Last, because it may revoke the other tokens (stateful runs follow GET
  /v1/admin/devices to DELETE), and the one token it cannot revoke. It leaves out the routes of the
  two runs before: their answers have the same schemas whoever calls, and running them again took
  a third of the test's time; what an admin token may call there is the access matrix's business.

Not exercised: `GET /ws`, a WebSocket, which OpenAPI cannot describe (its messages have JSON
Schemas in docs/schemas/ws, checked by tests/contract/test_ws_schemas.py), and `/`, `/static/*`,
`/healthz`, `/readyz`, `/metrics`, which are left out of the document. What each check is allowed
to accept beyond its defaults, and why, is in schemathesis.toml beside this file; a hook
(schemathesis_hooks.py) points valid single events at the device's TPS and the current time, so
that their 202 answer is checked too.

Bounded: derandomized, a fixed seed, few examples an operation; a failure prints schemathesis'
report (tokens filtered out).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from tests.security import TELEGRAM_SECRET, running_rig, served_rig

CONFIG = Path(__file__).with_name("schemathesis.toml")
REPO = Path(__file__).resolve().parents[2]
HOOKS = "tests.contract.schemathesis_hooks"  # single events at the device's TPS, now: see there
DEVICE_TPS = "T1"  # the rig's device is bound to it
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 5
SEED = 20241127
RUN_TIMEOUT_S = 150.0
DEVICE_PATHS = "^/v1/(events|gateway)|^/v1/device/"
OPERATOR_PATHS = "^/v1/incidents|^/v1/messages|^/me$"


def config_for(incident_id: str | None, tmp_path: Path) -> Path:
    """schemathesis.toml; with an incident, plus that incident as every `{incident_id}` of a path.

    The operator run gets the rig's incident, so that acknowledge, escalate, resolve and notes reach
    one (their 200 and 409 answers); the admin run gets none, so that they meet unknown ids (404).
    """
    if incident_id is None:
        return CONFIG
    path = tmp_path / f"schemathesis-{incident_id}.toml"
    path.write_text(
        CONFIG.read_text(encoding="utf-8")
        + "\n[[operations]]\n"
        + 'include-path-regex = "^/v1/incidents/\\\\{incident_id\\\\}"\n'
        + f'parameters = {{ incident_id = "{incident_id}" }}\n',
        encoding="utf-8",
    )
    return path


async def schemathesis(base: str, token: str, *, cwd: Path, config: Path, only: list[str]) -> tuple[int, str]:
    """`schemathesis run` against the served app with this bearer token: (exit code, report)."""
    args = [
        str(SCHEMATHESIS),
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",  # and so no example database
        "--no-shrink",
        "--continue-on-failure",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--header",
        f"Authorization: Bearer {token}",
        # Telegram's webhook is authenticated by its own header; with it the run reaches its logic.
        "--header",
        f"X-Telegram-Bot-Api-Secret-Token: {TELEGRAM_SECRET}",
        *only,
    ]
    env = os.environ | {"SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(REPO), "SIAGA_CONTRACT_TPS": DEVICE_TPS}
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.timeout(3 * RUN_TIMEOUT_S + 60)  # about 95 s here; more on a busy machine
async def test_the_api_answers_as_its_openapi_document_says(tmp_path: Path) -> None:
    async with served_rig(tmp_path) as (rig, hostport):
        base = f"http://{hostport}"
        runs = [
            ("device", rig.tokens["device"], None, ["--include-path-regex", DEVICE_PATHS]),
            (
                "operator",
                rig.tokens["operator"],
                rig.incident_id,
                ["--include-path-regex", OPERATOR_PATHS],
            ),
            ("admin", rig.tokens["admin_env"], None, ["--exclude-path-regex", f"{DEVICE_PATHS}|{OPERATOR_PATHS}"]),
        ]
        failures = []
        for name, token, incident_id, only in runs:
            assert token
            started = time.monotonic()
            config = config_for(incident_id, tmp_path)
            code, report = await schemathesis(base, token, cwd=tmp_path, config=config, only=only)
            print(f"schemathesis with the {name} token: exit {code} in {time.monotonic() - started:.1f} s")
            if code != 0:
                failures.append(f"--- schemathesis with the {name} token (exit {code}) ---\n{report[-20000:]}")
        assert not failures, "\n".join(failures)


async def test_a_405_names_every_method_of_its_path(tmp_path: Path) -> None:
    """Schemathesis' allow_header_conformance checks Allow; these are the paths with two routes."""
    async with running_rig(tmp_path, with_incident=False) as rig:
        for method, path, allowed in [
            ("PATCH", "/v1/admin/tokens", "GET, POST"),
            ("PUT", "/v1/admin/devices", "GET, POST"),
            ("DELETE", "/v1/admin/policy", "GET, PUT"),
            ("GET", "/v1/events", "POST"),
        ]:
            r = await rig.client.request(method, path, headers=rig.headers("admin"))
            assert (r.status_code, r.headers.get("allow")) == (405, allowed), (method, path, r.text)
            assert allowed in r.json()["detail"]


async def test_a_body_that_is_not_json_is_a_422_on_the_body(tmp_path: Path) -> None:
    async with running_rig(tmp_path, with_incident=False) as rig:
        headers = rig.headers("admin", **{"Content-Type": "application/json"})
        for body in (b'{"name": "x", "role": ', b"\xff\xfe"):
            r = await rig.client.post("/v1/admin/tokens", content=body, headers=headers)
            assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body", r.text
