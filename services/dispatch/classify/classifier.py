"""The report classifier: category, facts and severity of a field incident report, with reasons."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from services.dispatch.classify.analysis import Analysis, Analyzer, PhraseIndex
from services.dispatch.classify.facts import FactReader, Facts
from services.dispatch.classify.lexicon import DEFAULT_LEXICON_FILES, LexiconData, load_lexicon
from services.dispatch.classify.severity import SeverityRules, severity_for
from services.dispatch.classify.text import Tokenizer
from siaga.events import Category, Severity


@dataclass(frozen=True)
class Assessment:
    """The outcome for one report: what it is, how bad, the facts, and the reasons in words."""

    category: Category
    severity: Severity
    facts: Facts
    why: list[str]


@dataclass(frozen=True, slots=True)
class _Term:
    category: str
    group: str
    weight: float
    words: tuple[str, ...]


@dataclass(slots=True)
class _Hit:
    term: _Term
    score: float
    start: int
    end: int


class CategoryScorer:
    """Weighted lexicon scoring of the categories (data/categories.yaml)."""

    def __init__(self, lexicon: LexiconData, tokenizer: Tokenizer) -> None:
        self._lexicon = lexicon
        self._index: PhraseIndex[_Term | None] = PhraseIndex()
        for name, cat in lexicon.categories.items():
            for group_name, group in cat.groups.items():
                included = [t for fact_list in group.include for t in getattr(lexicon.facts, fact_list)]
                for term in [*group.terms, *included]:
                    words = tokenizer.words(term)
                    self._index.add(words, _Term(name, group_name, group.weight, words))
        for phrase in [*lexicon.scoring.blockers, *lexicon.text.place_phrases()]:
            self._index.add(tokenizer.words(phrase), None)
        # an animal or a disturbed person counts only as written (or with -nya), never by a slip or
        # a stem: "keras" is not "kera", "bedog" is not "dog"
        nuisance = lexicon.scoring.nuisance
        self._nuisance = frozenset(tokenizer.words(p) for p in (nuisance.subjects if nuisance is not None else ()))
        self._nuisance_lengths = sorted({len(w) for w in self._nuisance}, reverse=True)
        order = lexicon.scoring.priority
        self._rank = {c: order.index(c) if c in order else len(order) for c in lexicon.categories}

    def vocabulary(self) -> set[str]:
        """Every lexicon word the category terms use."""
        return self._index.words()

    def _nuisance_subject(self, analysis: Analysis) -> str | None:
        """The first animal or disturbed person the text names, unless negated ("bukan orang gila")."""
        tokens = analysis.tokens
        for i in range(len(tokens)):
            for n in self._nuisance_lengths:
                span = tokens[i : i + n]
                if (
                    len(span) == n
                    and len({t.clause for t in span}) == 1
                    and not span[0].negated
                    and tuple(t.word.removesuffix("nya") for t in span) in self._nuisance
                ):
                    return analysis.surface(i, i + n)
        return None

    def classify(self, analysis: Analysis) -> tuple[Category, list[str]]:
        """The category the text is about, and why."""
        scoring = self._lexicon.scoring
        scores, subject = self._scores(analysis)
        if not scores:
            return Category.OTHER, ["category other: no category words in text"]
        winner = max(scores, key=lambda c: (round(scores[c][0], 6), -self._rank[c]))
        score, distinct = scores[winner]
        if score < scoring.min_score:
            words = _quoted(analysis, distinct, scoring.max_why_words)
            if subject is not None:
                return Category.OTHER, [
                    f'category other: "{subject}" is the subject (an animal or a disturbed person), '
                    f"too little evidence of an incident ({words})"
                ]
            return Category.OTHER, [f"category other: too little evidence in text ({words})"]
        return Category(winner), [f"category {winner} from text: {_quoted(analysis, distinct, scoring.max_why_words)}"]

    def scores(self, analysis: Analysis) -> dict[str, float]:
        """Each category's score for the text (the categories with any evidence), for evaluation."""
        return {name: score for name, (score, _) in self._scores(analysis)[0].items()}

    def _scores(self, analysis: Analysis) -> tuple[dict[str, tuple[float, list[_Hit]]], str | None]:
        scoring = self._lexicon.scoring
        cats = self._lexicon.categories
        tokens = analysis.tokens
        hits: list[_Hit] = []
        rumour = scoring.reported_speech.cue_category if scoring.reported_speech is not None else None
        for m in self._index.find(tokens):
            best: dict[str, _Term] = {}
            for term in m.labels:
                if term is not None and (term.category not in best or term.weight > best[term.category].weight):
                    best[term.category] = term
            first = tokens[m.start]
            for name, term in best.items():
                if first.cleared or (first.strictly_negated and cats[name].negatable):
                    continue
                if first.voided and name != rumour:  # a false alarm voids the event, not the rumour of it
                    continue
                factor = scoring.hypothetical_factor if first.hypothetical and not cats[name].promised else 1.0
                if first.cause and scoring.cause is not None:
                    factor *= scoring.cause.factor
                elif first.circumstance and scoring.circumstance is not None:
                    factor *= scoring.circumstance.factor
                if first.background and scoring.focus is not None:
                    factor *= scoring.focus.factor
                hits.append(_Hit(term, term.weight * factor, m.start, m.end))

        rs = scoring.reported_speech
        if rs is not None:
            cue = sum(_distinct(h for h in hits if h.term.category == rs.cue_category).values(), 0.0)
            if cue >= rs.min_cue:
                for h in hits:
                    if h.term.category != rs.cue_category and tokens[h.start].reported:
                        h.score *= rs.factor

        hz = scoring.hazard
        if hz is not None and any(
            h.term.category in hz.hazards and h.score >= hz.min_weight and not tokens[h.start].cause for h in hits
        ):
            for h in hits:  # "kotak suara dibakar": the ballot box is what burned, the fire is the incident
                if h.term.category in hz.objects:
                    h.score *= hz.factor

        subject = self._nuisance_subject(analysis)
        nz = scoring.nuisance
        if subject is not None and nz is not None:
            for h in hits:  # "kucing masuk TPS, sudah diusir": an animal is no intruder, a cat is no threat
                if h.term.category not in nz.exempt:
                    h.score *= nz.factor

        by_category: dict[str, list[_Hit]] = {}
        for h in hits:
            by_category.setdefault(h.term.category, []).append(h)
        scores: dict[str, tuple[float, list[_Hit]]] = {}
        for name, cat_hits in by_category.items():
            distinct = _distinct_hits(cat_hits)
            groups = {h.term.group for h in distinct}
            if any(g not in groups for g in cats[name].requires):
                continue
            scores[name] = (sum(h.score for h in distinct), distinct)
        return scores, subject


def _distinct(hits: Iterable[_Hit]) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for h in hits:
        out[h.term.words] = max(out.get(h.term.words, 0.0), h.score)
    return out


def _distinct_hits(hits: list[_Hit]) -> list[_Hit]:
    """One hit per term (the term said twice counts once), strongest first."""
    best: dict[tuple[str, ...], _Hit] = {}
    for h in hits:
        if h.score > 0 and (h.term.words not in best or h.score > best[h.term.words].score):
            best[h.term.words] = h
    return sorted(best.values(), key=lambda h: (-h.score, h.start))


def _quoted(analysis: Analysis, hits: list[_Hit], limit: int) -> str:
    words = dict.fromkeys(analysis.surface(h.start, h.end) for h in hits)
    return ", ".join(f'"{w}"' for w in list(words)[:limit])


class Classifier:
    """Classifies field incident reports with lexicons loaded from YAML data files."""

    def __init__(self, lexicon: LexiconData) -> None:
        tokenizer = Tokenizer(lexicon.text)
        self._scorer = CategoryScorer(lexicon, tokenizer)
        self._facts = FactReader(lexicon.facts, tokenizer, lexicon.text.place_phrases())
        self._analyzer = Analyzer(lexicon, self._scorer.vocabulary() | self._facts.vocabulary())
        self._ignore_text_facts = frozenset(lexicon.scoring.text_facts_ignored_for)

    @classmethod
    def default(cls) -> Classifier:
        """The classifier with the packaged lexicons (loaded once per process)."""
        return _default_classifier()

    @classmethod
    def from_files(cls, *paths: str | Path) -> Classifier:
        """A classifier from lexicon files, merged in order; a bad file raises ValueError naming it.

        To extend the packaged lexicons, pass `*DEFAULT_LEXICON_FILES` first, then your file.
        """
        return cls(load_lexicon(paths))

    def analyse(self, text: str) -> Analysis:
        """The analysed text (tokens, lemmas, numbers, negation), for callers that need both parts."""
        return self._analyzer.analyse(text)

    def category(self, text: str) -> tuple[Category, list[str]]:
        """The category of a report's text, and why."""
        return self._scorer.classify(self._analyzer.analyse(text))

    def category_scores(self, text: str) -> dict[str, float]:
        """Each category's score for the text, before the minimum and the tie-break (for evaluation)."""
        return self._scorer.scores(self._analyzer.analyse(text))

    def facts(self, text: str) -> tuple[Facts, list[str]]:
        """The facts stated in a report's text, and why."""
        facts, why = self._facts.read(self._analyzer.analyse(text))
        return facts, [line for _, line in why]

    def assess(
        self,
        *,
        description: str,
        category: Category | None,
        injuries: int | None,
        weapons: bool | None,
        crowd_size: int | None,
        rawan: Collection[str],
        rules: SeverityRules,
    ) -> Assessment:
        """Category, facts and severity of one report (SPEC section 5).

        The device's category wins unless it is absent or `other`; the device's facts win where
        given (not None) and the text fills the rest; then `severity_for` applies the rules.
        """
        analysis = self._analyzer.analyse(description)
        if category is None or category is Category.OTHER:
            chosen, why = self._scorer.classify(analysis)
            if category is Category.OTHER:
                why = [f"{why[0]} (device said other)"]
        else:
            chosen, why = category, [f"category {category} from device"]

        text_facts, text_why = self._facts.read(analysis)
        if chosen.value in self._ignore_text_facts:
            if text_facts != Facts():
                why.append(f"facts in the text not used: a {chosen} report describes a rumour, not an event")
            text_facts, text_why = Facts(), []
        payload: dict[str, int | bool | None] = {
            "injuries": injuries,
            "weapons": weapons,
            "crowd_size": crowd_size,
        }
        for field, line in text_why:
            if payload.get(field) is None:
                why.append(line)
        if injuries is not None:
            why.append(f"injuries {injuries} from payload" if injuries else "no injuries from payload")
        if weapons is not None:
            why.append("weapons from payload" if weapons else "no weapons from payload")
        if crowd_size is not None and crowd_size > 0:
            why.append(f"crowd {crowd_size} from payload")
        facts = Facts(
            injuries=text_facts.injuries if injuries is None else injuries,
            deaths=text_facts.deaths,
            weapons=text_facts.weapons if weapons is None else weapons,
            crowd_size=text_facts.crowd_size if crowd_size is None else crowd_size,
            deliberate_fire=text_facts.deliberate_fire,
        )
        severity, severity_why = severity_for(chosen, facts, rawan, rules)
        return Assessment(category=chosen, severity=severity, facts=facts, why=why + severity_why)


@cache
def _default_classifier() -> Classifier:
    return Classifier(load_lexicon(DEFAULT_LEXICON_FILES))
