"""Write the JSON Schemas of the incident and TPS objects the dashboard's WebSocket sends.

`docs/schemas/ws/objects/incident.json` and `tps.json` are generated from the bus contracts
(`siaga.contracts.IncidentPublic`, `TpsPublic`): the dashboard forwards the updates topic's own JSON,
so these are exactly what a frame can hold. The other files of docs/schemas/ws are written by hand.
tests/contract/test_ws_schemas.py fails when a generated file is out of date: run
`python -m scripts.ws_schemas` after changing a contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from siaga.contracts import IncidentPublic, TpsPublic
from siaga.openapi import inline_schema

OBJECTS = Path(__file__).resolve().parent.parent / "docs" / "schemas" / "ws" / "objects"
MODELS: dict[str, type[BaseModel]] = {"incident.json": IncidentPublic, "tps.json": TpsPublic}


def object_schema(name: str) -> dict[str, Any]:
    """The schema of one object file, as generated from its contract model."""
    schema = inline_schema(MODELS[name])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": "Generated from siaga.contracts by scripts/ws_schemas.py: do not edit by hand.",
        **schema,
    }


def text(name: str) -> str:
    return json.dumps(object_schema(name), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for name in MODELS:
        (OBJECTS / name).write_text(text(name), encoding="utf-8")
        print(f"wrote {OBJECTS / name}")


if __name__ == "__main__":
    main()
