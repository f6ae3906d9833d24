"""Classification speed: assess() per report on the shared examples, the held-out set and the batches.

Baseline, measured in the same run on the same texts: a naive classifier that lowercases, splits
and looks each word up in one dict (the least any keyword classifier must do).

    .venv/bin/python -m bench.classify [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import ROOT, say, table, write
from services.dispatch.classify import Classifier, SeverityRules
from siaga.events import Category


def texts() -> list[dict[str, object]]:
    files = [
        ROOT.parent / "shared" / "examples" / "reports.jsonl",
        ROOT / "tests" / "data" / "reports_heldout.jsonl",
        *sorted((ROOT / "tests" / "data" / "batches").glob("batch_*.jsonl")),
    ]
    return [json.loads(line) for f in files if Path(f).exists() for line in Path(f).read_text().splitlines() if line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="passes over all reports (default 20)")
    a = ap.parse_args()
    cases = texts()
    clf, rules = Classifier.default(), SeverityRules()
    naive = {
        "banjir": "flood",
        "bentrok": "violence",
        "massa": "crowd",
        "ancam": "intimidation",
        "uang": "money_politics",
    }

    def run_naive() -> None:
        for c in cases:
            for w in str(c["description"]).lower().split():
                naive.get(w)

    def run_siaga() -> None:
        for c in cases:
            p = dict(c.get("payload") or {})  # type: ignore[call-overload]
            clf.assess(
                description=str(c["description"]),
                category=Category(p["category"]) if p.get("category") else None,
                injuries=p.get("injuries"),
                weapons=p.get("weapons"),
                crowd_size=p.get("crowd_size"),
                rawan=list(c.get("rawan") or []),  # type: ignore[call-overload]
                rules=rules,
            )

    rows = []
    for name, fn in (("naive dict lookup (baseline)", run_naive), ("siaga assess()", run_siaga)):
        fn()  # warm caches
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(a.rounds):
                fn()
            best = min(best, time.perf_counter() - t0)
        per = best / (a.rounds * len(cases))
        rows.append(
            {"what": name, "reports": len(cases), "us_per_report": round(per * 1e6, 1), "reports_per_s": round(1 / per)}
        )
    for r in rows:
        r["vs_baseline"] = f"{r['us_per_report'] / rows[0]['us_per_report']:.0f}x slower"
    print(table(rows, ["what", "reports", "us_per_report", "reports_per_s", "vs_baseline"]))
    say(f"wrote {write('classify', {'rounds': a.rounds, 'rows': rows})}")


if __name__ == "__main__":
    main()
