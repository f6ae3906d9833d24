"""Turn an export of operators' corrections into test cases for the classifier.

    curl -H "Authorization: Bearer $ADMIN" http://127.0.0.1:8000/v1/admin/corrections > corrections.jsonl
    python scripts/corrections_to_tests.py corrections.jsonl >> tests/data/reports_heldout.jsonl

Each correction becomes one line in the format of tests/data/reports_heldout.jsonl: the report's text,
its TPS's rawan, and what the operator said as the expected (category, severity). The payload is left
empty, so the case checks that the classifier reads the facts from the text too; `--with-facts` puts
the facts dispatch held (injuries, weapons, crowd size) in the payload instead. Only the newest
correction of an incident counts, and a correction that overrode the facts' severity (the operator
knew more than the report says) is left out unless `--with-overrides` is given. Review the lines
before you commit them: an operator's reason may show a case the lexicon should not learn.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any

PAYLOAD_FACTS = ("injuries", "weapons", "crowd_size")


def cases_from(lines: Iterable[str], *, with_facts: bool = False, with_overrides: bool = False) -> list[dict[str, Any]]:
    """The test cases of an export's lines (JSON objects), one per corrected incident, oldest first."""
    newest: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.strip():
            c = json.loads(line)
            newest.pop(c["incident_id"], None)  # keeps the order of the newest corrections
            newest[c["incident_id"]] = c
    cases = []
    for c in newest.values():
        if c["override"] and not with_overrides:
            continue
        facts = c.get("payload") or {}
        payload = {k: facts[k] for k in PAYLOAD_FACTS if with_facts and facts.get(k)}
        cases.append(
            {
                "description": c["text"],
                "payload": payload,
                "rawan": c.get("rawan") or [],
                "expect": [[c["operator"]["category"], c["operator"]["severity"]]],
            }
        )
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", nargs="?", default="-", help="the export (JSON lines); - or nothing: stdin")
    parser.add_argument("--with-facts", action="store_true", help="put the facts dispatch held in the payload")
    parser.add_argument("--with-overrides", action="store_true", help="keep corrections that overrode the facts")
    args = parser.parse_args(argv)
    source = sys.stdin if args.export == "-" else open(args.export, encoding="utf-8")  # noqa: SIM115
    with source:
        cases = cases_from(source, with_facts=args.with_facts, with_overrides=args.with_overrides)
    for case in cases:
        sys.stdout.write(json.dumps(case, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
