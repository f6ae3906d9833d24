"""How a labelled report (a line of tests/data/*.jsonl) is put to the classifier, for every test that scores a set."""

from __future__ import annotations

from typing import Any

from services.dispatch.classify import Classifier, SeverityRules
from siaga.events import Category


def assess_case(clf: Classifier, row: dict[str, Any], rules: SeverityRules) -> list[str]:
    """[category, severity] the classifier gives the report of `row` (its description, payload and rawan)."""
    p = row["payload"]
    a = clf.assess(
        description=row["description"],
        category=Category(p["category"]) if p.get("category") else None,
        injuries=p.get("injuries"),
        weapons=p.get("weapons"),
        crowd_size=p.get("crowd_size"),
        rawan=row["rawan"],
        rules=rules,
    )
    return [a.category.value, a.severity.value]
