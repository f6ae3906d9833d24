"""A report's text analysed once for every rule: tokens, lemmas, numbers, negation and hypotheticals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.dispatch.classify.lexicon import LexiconData, NumberWords
from services.dispatch.classify.text import NUMBER, LemmaResolver, Token, Tokenizer, nfkc

L = TypeVar("L")


@dataclass(frozen=True, slots=True)
class Match(Generic[L]):
    start: int  # first token
    end: int  # one past the last token
    labels: tuple[L, ...]


class PhraseIndex(Generic[L]):
    """Lexicon phrases (tuples of lexicon words, "#" for a number) found in a token list.

    Longer phrases win over shorter ones that overlap them; all labels of one span are kept,
    so a word that belongs to two categories scores for both.
    """

    def __init__(self) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], L]]] = {}
        # per word (its lemmas depend on the word only): labels of one-word entries, longer entries
        self._starting: dict[str, tuple[tuple[L, ...], tuple[tuple[tuple[str, ...], L], ...]]] = {}

    def add(self, words: tuple[str, ...], label: L) -> None:
        if words:
            self._by_first.setdefault(words[0], []).append((words, label))
            self._starting.clear()

    def words(self) -> set[str]:
        return {w for entries in self._by_first.values() for words, _ in entries for w in words if w != NUMBER}

    def _entries(self, tok: Token) -> tuple[tuple[L, ...], tuple[tuple[tuple[str, ...], L], ...]]:
        entries = self._starting.get(tok.word)
        if entries is None:
            found = [e for k in sorted({tok.word, *tok.lemmas}) for e in self._by_first.get(k, ())]
            entries = (
                tuple(label for words, label in found if len(words) == 1),
                tuple(e for e in found if len(e[0]) > 1),
            )
            if len(self._starting) > 100_000:
                self._starting.clear()
            self._starting[tok.word] = entries
        return entries

    def find(self, tokens: Sequence[Token]) -> list[Match[L]]:
        """Non-overlapping matches of the phrases in `tokens`, in text order."""
        singles: list[Match[L]] = []
        longer: dict[tuple[int, int], list[L]] = {}
        n = len(tokens)
        by_number = self._by_first.get(NUMBER, ())
        for i, tok in enumerate(tokens):
            if tok.in_number:
                continue
            labels, multi = self._entries(tok)
            if labels:
                singles.append(Match(i, i + 1, labels))
            if tok.number is not None and by_number:
                multi = (*multi, *by_number)
            for words, label in multi:
                end = _match_at(tokens, i, words, n)
                if end is not None:
                    longer.setdefault((i, end), []).append(label)
        if not longer:
            return singles  # one-word matches never overlap
        taken = [False] * n
        out: list[Match[L]] = []
        for start, end in sorted(longer, key=lambda s: (s[0] - s[1], s[0])):
            if end - start == 1 or any(taken[start:end]):
                if end - start == 1 and not taken[start]:
                    out.append(Match(start, end, tuple(longer[(start, end)])))
                    taken[start] = True
                continue
            for k in range(start, end):
                taken[k] = True
            out.append(Match(start, end, tuple(longer[(start, end)])))
        for m in singles:
            if not taken[m.start]:
                out.append(m)
        out.sort(key=lambda m: m.start)
        return out


def _match_at(tokens: Sequence[Token], i: int, words: tuple[str, ...], n: int) -> int | None:
    j = i
    clause = tokens[i].clause
    for w in words:
        while j < n and tokens[j].in_number:  # "salam dua puluh jari": a number group is one word
            j += 1
        if j >= n or tokens[j].clause != clause:
            return None
        tok = tokens[j]
        if w == NUMBER:
            if tok.number is None:
                return None
        elif tok.word != w and w not in tok.lemmas:
            return None
        j += 1
    while j < n and tokens[j].in_number:
        j += 1
    return j


@dataclass(frozen=True, slots=True)
class Analysis:
    """The analysed text: `text` is what token spans index."""

    text: str
    tokens: list[Token]

    def surface(self, start: int, end: int) -> str:
        """The original words of tokens start..end-1, as the reporter wrote them."""
        return self.text[self.tokens[start].start : self.tokens[end - 1].end]


class Analyzer:
    """Tokenizes, resolves lemmas, reads numbers and marks negated and hypothetical words."""

    def __init__(self, lexicon: LexiconData, vocabulary: set[str]) -> None:
        self.tokenizer = Tokenizer(lexicon.text)
        neg = lexicon.negation
        self._numbers = lexicon.facts.numbers
        self._markers: PhraseIndex[str] = PhraseIndex()
        for kind, words in (
            ("neg", neg.negators),
            ("strict", neg.strict_negators),
            ("post", neg.post_negators),
            ("hypo", neg.hypothetical),
            ("clear", neg.all_clear),
            ("inert", neg.not_negating),
            ("false", neg.false_alarm),
            ("alarm", neg.false_alarm_cues),
        ):
            for w in words:
                self._markers.add(self.tokenizer.words(w), kind)
        rs = lexicon.scoring.reported_speech
        for w in rs.markers if rs is not None else ():
            self._markers.add(self.tokenizer.words(w), "reported")
        cause = lexicon.scoring.cause
        for w in cause.markers if cause is not None else ():
            self._markers.add(self.tokenizer.words(w), "cause")
        circ = lexicon.scoring.circumstance
        for w in circ.markers if circ is not None else ():
            self._markers.add(self.tokenizer.words(w), "circ")
        focus = lexicon.scoring.focus
        for w in focus.markers if focus is not None else ():
            self._markers.add(self.tokenizer.words(w), "focus")
        self._circ_window = circ.window if circ is not None and circ.window is not None else None
        # all-clear words count only as written: "diamankan" (arrested) is not "aman" (all clear)
        self._clear_words = frozenset(self.tokenizer.words(w) for w in neg.all_clear)
        self._question_openers = frozenset(self.tokenizer.words(w) for w in neg.question_openers)
        self._window = neg.window
        self._post_window = neg.post_window
        self._clear_window = neg.all_clear_window
        self._hypo_window = neg.hypothetical_window
        self._adjacent = neg.adjacent_window
        self.resolver = LemmaResolver(lexicon.text, vocabulary | self._markers.words())

    def analyse(self, text: str) -> Analysis:
        """The analysis of one report's text."""
        text = nfkc(text)
        tokens = self.tokenizer.tokenize(text)
        resolve = self.resolver.resolve
        for tok in tokens:
            tok.lemmas = resolve(tok.word)
        self._read_numbers(tokens)
        self._mark(tokens)
        self._mark_questions(text, tokens)
        return Analysis(text, tokens)

    def _mark_questions(self, text: str, tokens: list[Token]) -> None:
        """A yes/no question is doubt, not a report: in "ada bom?" no bomb is stated."""
        if "?" not in text or not self._question_openers:
            return
        longest = max(len(w) for w in self._question_openers)
        start = 0
        while start < len(tokens):
            end = start
            while end < len(tokens) and tokens[end].clause == tokens[start].clause:
                end += 1
            rest = text[tokens[end - 1].end :].lstrip()
            opener = tuple(t.word for t in tokens[start : start + longest])
            if rest.startswith("?") and any(opener[: len(w)] == w for w in self._question_openers):
                for tok in tokens[start:end]:
                    tok.negated = tok.hypothetical = True
                    tok.negation = tok.negation or (start, end)
            start = end

    def _read_numbers(self, tokens: list[Token]) -> None:
        nw = self._numbers
        i, n = 0, len(tokens)
        while i < n:
            tok = tokens[i]
            if tok.number is None and tok.word not in nw.units and tok.word not in nw.quantities:
                i += 1
                continue
            if tok.word in nw.quantities:
                tok.number = nw.quantities[tok.word]
                after = tokens[i + 1] if i + 1 < n and tokens[i + 1].clause == tok.clause else None
                if after is not None and after.number is None:  # "beberapa ratus", "several hundred"
                    factor = nw.multipliers.get(after.word) or nw.big_multipliers.get(after.word)
                    if factor and tok.number < 10:
                        tok.number *= factor
                        after.in_number = True
                        i += 1
                i += 1
                continue
            value, end = _number_group(tokens, i, nw)
            tok.number = value
            for k in range(i + 1, end):
                tokens[k].in_number = True
            i = end

    def _mark(self, tokens: list[Token]) -> None:
        n = len(tokens)
        alarmed = False  # a false-alarm cue came before (markers come in text order)
        for m in self._markers.find(tokens):
            clause = tokens[m.start].clause
            for kind in m.labels:
                if kind == "inert":  # "orang tak dikenal": an unknown person, nothing negated
                    continue
                if kind == "focus":  # what came before is the background of the point that follows
                    for tok in tokens[: m.start]:
                        tok.background = True
                    continue
                if kind == "alarm":
                    alarmed = True
                    continue
                if kind == "false":  # "dikira pisau, ternyata cuma gagang payung": what was said before did not happen
                    if not alarmed:  # "kotak suara datang, ternyata cuma 3": no alarm raised, the shortfall stands
                        continue
                    for tok in tokens[: m.start]:
                        tok.voided = tok.negated = True
                        if tok.negation is None:
                            tok.negation = (m.start, m.end)
                    continue
                if kind == "clear":
                    if tuple(t.word for t in tokens[m.start : m.end]) not in self._clear_words:
                        continue
                    for k in range(m.start - 1, max(m.start - 1 - self._clear_window, -1), -1):
                        if tokens[k].clause != clause:
                            break
                        tokens[k].cleared = True
                    for tok in tokens[m.start : m.end]:  # "kotak *disegel*": the all-clear word is no problem itself
                        tok.cleared = True
                    continue
                if kind == "post":
                    for k in range(m.start - 1, max(m.start - 1 - self._post_window, -1), -1):
                        if tokens[k].clause != clause:
                            break
                        tokens[k].negated = tokens[k].strictly_negated = True
                        tokens[k].negation = (k, m.end)
                    continue
                window = {
                    "hypo": self._hypo_window,
                    "reported": n,
                    "cause": n,
                    "circ": self._circ_window or n,
                }.get(kind, self._window)
                for k in range(m.end, min(m.end + window, n)):
                    tok = tokens[k]
                    if tok.clause != clause:
                        break
                    if kind == "neg":
                        tok.negated = True
                        if k - m.end < self._adjacent:  # "belum ricuh": the word a negator touches did not happen
                            tok.strictly_negated = True
                        tok.negation = tok.negation or (m.start, k + 1)
                    elif kind == "strict":
                        tok.negated = tok.strictly_negated = True
                        tok.negation = tok.negation or (m.start, k + 1)
                    elif kind == "hypo":
                        tok.hypothetical = True
                        tok.negation = tok.negation or (m.start, k + 1)
                    elif kind == "cause":
                        tok.cause = True
                    elif kind == "circ":
                        tok.circumstance = True
                    else:
                        tok.reported = True


def _number_group(tokens: list[Token], i: int, nw: NumberWords) -> tuple[int, int]:
    """Read "dua ratus lima puluh", "2 ratus", "100 ribu", "seratus lima" from token i: (value, end index)."""
    first = tokens[i]
    current = first.number if first.number is not None else nw.units[first.word]
    group = 0  # finished parts below the big multiplier: "dua puluh" in "dua puluh lima ribu"
    total = 0  # finished thousands and millions
    open_for_unit = current >= 100  # "seratus lima": a round hundred takes a unit after it
    j = i + 1
    while j < len(tokens) and tokens[j].clause == first.clause:
        w = tokens[j].word
        if w in nw.add:
            current = (current or 1) + nw.add[w]
        elif w in nw.multipliers:
            current = (current or 1) * nw.multipliers[w]
        elif w in nw.big_multipliers:
            total += ((group + current) or 1) * nw.big_multipliers[w]
            group = current = 0
        elif w[-2:] == "an" and (w[:-2] in nw.multipliers or w[:-2] in nw.big_multipliers):
            # "lima puluhan", "dua ratusan": a round count given loosely, the round figure
            factor = nw.multipliers.get(w[:-2]) or nw.big_multipliers[w[:-2]]
            j += 1
            return total + group + (current or 1) * factor, j
        elif open_for_unit and w in nw.units and nw.units[w] < 100:
            group += current
            current = nw.units[w]
            open_for_unit = False
            j += 1
            continue
        else:
            break
        open_for_unit = True
        j += 1
    return total + group + current, j
