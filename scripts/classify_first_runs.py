"""Would a trained tie-breaker have helped the first runs? A fair estimate, batch by batch.

    .venv/bin/python -m scripts.classify_first_runs [--batches 19-23]

`scripts/classify_lobo.py` measures a model on rules that were tuned on every batch, so the model
can only lose there. This script replays history instead: for each batch, it checks out the
classifier as it was in the commit that added the batch (before any tuning for it), which gives
the batch's logged first-run figure, and scores the batch again with a multinomial naive Bayes
model (scripts/classify_lobo.py's) trained on every labelled report the repository held at that
commit, except the batch itself: the earlier batches, the held-out set and the shared examples.
The model chooses among the categories whose rule scores are within a margin of the best
(`model@margin`), or alone among all categories (`model alone`, the rules then only grading severity),
or only where the rules' best score is below a threshold (`weak<t`). `either` counts the reports
that the rules or the model alone gets right: the ceiling of any way of choosing between them.

Deterministic; the data and the old code come from git (`git archive`), nothing is downloaded.
Prints one line per batch and margin; docs/classification.md quotes the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARGINS = (0.0, 0.5, 1.0, 2.0)

# Run inside a checkout of the old commit, with that commit's classifier on sys.path.
_PROBE = r"""
import json, sys
from pathlib import Path
from services.dispatch.classify import Classifier, SeverityRules
from siaga.events import Category
sys.path.insert(0, sys.argv[1])
from scripts.classify_lobo import NaiveBayes, tie_break  # today's model code, given the old classifier

held_name, margins = sys.argv[2], [float(m) for m in sys.argv[3].split(",")]
clf, rules = Classifier.default(), SeverityRules()

def rows(path):
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]

def features(text):
    out = []
    for tok in clf.analyse(text).tokens:
        out.append(tok.word)
        out.extend("~" + lemma for lemma in sorted(tok.lemmas))
    return out

def scores(text):
    if hasattr(clf, "category_scores"):
        return clf.category_scores(text)
    return {name: s for name, (s, _) in clf._scorer._scores(clf._analyzer.analyse(text))[0].items()}

def assess(row, category=None):
    p = row.get("payload") or {}
    given = Category(p["category"]) if p.get("category") else None
    a = clf.assess(description=row["description"], category=category or given,
                   injuries=p.get("injuries"), weapons=p.get("weapons"), crowd_size=p.get("crowd_size"),
                   rawan=row.get("rawan") or [], rules=rules)
    return [a.category.value, a.severity.value]

data = Path("tests/data")
train = []
for path in sorted(data.glob("batches/batch_*.jsonl")):
    if path.name != held_name:
        train += [(features(r["description"]), r["expect"][0][0]) for r in rows(path)]
for path in [data / "reports_heldout.jsonl", *sorted(data.glob("shared/*.jsonl"))]:
    if path.exists():
        for r in rows(path):
            label = r.get("expect", [[r.get("category")]])[0][0] if "expect" in r else r.get("category")
            if label:
                train.append((features(r["description"]), label))
nb = NaiveBayes(train)
held = rows(data / "batches" / held_name)
out = {"train": len(train), "reports": len(held), "rules": [0, 0], "model alone": [0, 0]}
for m in margins:
    out[f"model@{m}"] = [0, 0]
for row in held:
    expect, cats = row["expect"], {pair[0] for pair in row["expect"]}
    got = assess(row)
    out["rules"][0] += got in expect
    out["rules"][1] += got[0] in cats
    words = features(row["description"])
    alone = assess(row, Category(max(sorted(nb.prior), key=lambda c: nb.log_prob(words, c))))
    out["model alone"][0] += alone in expect
    out["model alone"][1] += alone[0] in cats
    out.setdefault("either", [0, 0])  # the ceiling of any choice between the two: one of them is right
    out["either"][0] += got in expect or alone in expect
    out["either"][1] += got[0] in cats or alone[0] in cats
    sc = scores(row["description"])
    top = max(sc.values(), default=0.0)
    for t in (1.5, 2.5, 3.0, 4.0):
        pick = alone if top < t else got
        out.setdefault(f"weak<{t}", [0, 0])
        out[f"weak<{t}"][0] += pick in expect
        out[f"weak<{t}"][1] += pick[0] in cats
    p = row.get("payload") or {}
    s = sc if not p.get("category") or p["category"] == "other" else {}
    for m in margins:
        pick = tie_break(nb, words, s, m)
        choice = got if pick is None else assess(row, Category(pick))
        out[f"model@{m}"][0] += choice in expect
        out[f"model@{m}"][1] += choice[0] in cats
print(json.dumps(out))
"""


def batch_commit(number: int) -> tuple[str, str]:
    """The commit that added batch `number`, and the batch's file name."""
    path = next((ROOT / "tests" / "data" / "batches").glob(f"batch_{number:02d}_*.jsonl"))
    rel = path.relative_to(ROOT)
    commit = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", str(rel)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    return commit, path.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--batches",
        default="19-23",
        help="batch numbers, a range or a comma list (default 19-23: the batches whose commit held no tuning "
        "for them, so that the rules column equals the logged first run; before 18 the probe cannot read "
        "the old scorer's scores)",
    )
    a = ap.parse_args()
    if "-" in a.batches:
        lo, hi = (int(x) for x in a.batches.split("-"))
        numbers = list(range(lo, hi + 1))
    else:
        numbers = [int(x) for x in a.batches.split(",")]
    totals: dict[str, list[int]] = {}
    n_total = 0
    for number in numbers:
        commit, name = batch_commit(number)
        with tempfile.TemporaryDirectory(prefix="siaga-first-run-") as tmp:
            archive = subprocess.run(
                ["git", "archive", commit, "services", "siaga", "tests/data"], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            print(f"batch {number} at {commit[:8]} ...", file=sys.stderr, flush=True)
            probe = subprocess.run(
                [sys.executable, "-c", _PROBE, str(ROOT), name, ",".join(map(str, MARGINS))],
                cwd=tmp,
                capture_output=True,
                text=True,
                env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"},
            )
        if probe.returncode != 0:  # a classifier older than the probe's calls (analyse, tok.lemmas)
            last = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit {probe.returncode}"
            print(f"batch {number:2}: skipped, its commit's classifier cannot be probed ({last})", flush=True)
            continue
        out = json.loads(probe.stdout.strip().splitlines()[-1])
        n = out["reports"]
        n_total += n
        line = [f"batch {number:2} ({n} reports, model trained on {out['train']})"]
        for key in [k for k in out if k not in ("train", "reports")]:
            exact, cat = out[key]
            totals.setdefault(key, [0, 0])
            totals[key][0] += exact
            totals[key][1] += cat
            line.append(f"{key} {exact / n:.1%}/{cat / n:.1%}")
        print("  ".join(line), flush=True)
    print(
        "all   "
        + "  ".join(f"{k} {e}/{n_total} ({e / n_total:.1%}) / {c / n_total:.1%}" for k, (e, c) in totals.items())
    )


if __name__ == "__main__":
    main()
