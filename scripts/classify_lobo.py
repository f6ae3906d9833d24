"""Leave-one-batch-out estimate for a trained tie-breaker on top of the classify rules.

    .venv/bin/python -m scripts.classify_lobo

For each batch under tests/data/batches/ in turn, a multinomial naive Bayes model over the words
(and their lexicon lemmas) of the other batches' reports is trained, and the held-out batch is
scored twice: by the rules alone, and by the rules with the model choosing among the categories
whose rule scores are within MARGIN of the best. The rules themselves were tuned on every batch,
so both figures are after-tuning figures; only the difference between them is the model's. The
data is in the repo and the run is deterministic. Prints a table; docs/classification.md quotes it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from services.dispatch.classify import Classifier, SeverityRules
from siaga.events import Category
from tests.classify_cases import assess_case

BATCHES = Path(__file__).parents[1] / "tests" / "data" / "batches"
MARGINS = (0.0, 0.5, 1.0, 2.0)


def features(clf: Classifier, text: str) -> list[str]:
    """The report's words and the lexicon words they stand for."""
    out: list[str] = []
    for tok in clf.analyse(text).tokens:
        out.append(tok.word)
        out.extend(f"~{lemma}" for lemma in sorted(tok.lemmas))
    return out


class NaiveBayes:
    """Multinomial naive Bayes with add-one smoothing."""

    def __init__(self, docs: list[tuple[list[str], str]]) -> None:
        self.prior: Counter[str] = Counter(label for _, label in docs)
        self.counts: dict[str, Counter[str]] = {label: Counter() for label in self.prior}
        for words, label in docs:
            self.counts[label].update(words)
        self.vocab = {w for c in self.counts.values() for w in c}
        self.totals = {label: sum(c.values()) for label, c in self.counts.items()}
        self.n = sum(self.prior.values())

    def log_prob(self, words: list[str], label: str) -> float:
        if label not in self.prior:
            return -math.inf
        v = len(self.vocab) + 1
        lp = math.log(self.prior[label] / self.n)
        for w in words:
            lp += math.log((self.counts[label][w] + 1) / (self.totals[label] + v))
        return lp


def tie_break(nb: NaiveBayes, words: list[str], scores: dict[str, float], margin: float) -> str | None:
    """The model's pick among the categories whose rule scores are within `margin` of the best (and
    above the rules' minimum), or None when fewer than two are."""
    if not scores:
        return None
    best = max(scores.values())
    near = [c for c, s in scores.items() if s >= best - margin and s >= 1.5]
    return max(sorted(near), key=lambda c: nb.log_prob(words, c)) if len(near) > 1 else None


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    clf, rules = Classifier.default(), SeverityRules()
    batches = {p.name: rows(p) for p in sorted(BATCHES.glob("batch_*.jsonl"))}
    feats = {id(r): features(clf, r["description"]) for rs in batches.values() for r in rs}
    total = {"rules": [0, 0, 0], **{f"model@{m}": [0, 0, 0] for m in MARGINS}}
    for name, held in batches.items():
        train = [(feats[id(r)], r["expect"][0][0]) for n, rs in batches.items() if n != name for r in rs]
        nb = NaiveBayes(train)
        for row in held:
            expect = row["expect"]
            cats = {pair[0] for pair in expect}
            got = assess_case(clf, row, rules)
            total["rules"][0] += 1
            total["rules"][1] += got in expect
            total["rules"][2] += got[0] in cats
            p = row["payload"]
            from_text = not p.get("category") or p["category"] == "other"
            scores = clf.category_scores(row["description"]) if from_text else {}
            for m in MARGINS:
                choice = got
                pick = tie_break(nb, feats[id(row)], scores, m)
                if pick is not None:
                    a = clf.assess(
                        description=row["description"],
                        category=Category(pick),
                        injuries=p.get("injuries"),
                        weapons=p.get("weapons"),
                        crowd_size=p.get("crowd_size"),
                        rawan=row["rawan"],
                        rules=rules,
                    )
                    choice = [a.category.value, a.severity.value]
                t = total[f"model@{m}"]
                t[0] += 1
                t[1] += choice in expect
                t[2] += choice[0] in cats
    for key, (n, exact, cat) in total.items():
        print(f"{key:12} exact {exact}/{n} ({exact / n:.1%})  category {cat}/{n} ({cat / n:.1%})")


if __name__ == "__main__":
    main()
