"""From report text to tokens: normalization, slang, reduplication, affixes and misspellings.

Field reports are WhatsApp-style Indonesian with English mixed in: "bnjiiir", "bagi2 duit",
"orang-orang", "dibakar", "yg", "gk ada korban". Each word is normalized here and then resolved
to the lexicon words ("lemmas") it can stand for, so the rules downstream only ever see lexicon
words. Resolution is cached per distinct word: a report costs a few dictionary look-ups a word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from Sastrawi.Stemmer.StemmerFactory import StemmerFactory

from services.dispatch.classify.lexicon import TextRules

NUMBER = "#"  # stands for any number in a lexicon phrase ("pukul #")

_RAW = re.compile(
    r"(?P<thousands>\d{1,3}(?:[.,]\d{3})+)(?![\d])"
    r"|(?P<number>\d+)(?:[.,:]\d+)?"
    r"|(?P<code>[^\W\d_]\d)(?![^\W_])"  # form names: c1, c6
    r"|(?P<redup>[^\W\d_]{2,})2(?![^\W_])"  # "bagi2": written reduplication
    r"|(?P<abbr>(?i:kab|kec|kel|ds|dsn|kp|jl|jln|prov)\.)(?![^\W_])"  # "Kab. Malang": its dot ends nothing
    r"|(?P<word>[^\W\d_]+(?:['-][^\W\d_]+)*)"
    r"|(?P<brk>[.,;!?\n])"
    r"|(?P<approx>±)"
)
_TRIPLES = re.compile(r"([^\W\d_])\1{2,}")
_DOUBLES = re.compile(r"([^\W\d_])\1+")
_VOWELS = frozenset("aeiou")


@dataclass(slots=True)
class Token:
    """One normalized word of a report, with where it came from."""

    word: str
    start: int
    end: int
    clause: int
    lemmas: frozenset[str] = frozenset()
    number: int | None = None  # the value of a number group, on its first token
    in_number: bool = False  # a later word of a number group ("dua *puluh*")
    negated: bool = False  # after a negator: tidak, tanpa, no
    strictly_negated: bool = False  # after tidak ada, tanpa, nihil: also cancels category words
    hypothetical: bool = False  # after akan, jika, diancam: did not (yet) happen
    reported: bool = False  # inside reported speech: bahwa, katanya
    cause: bool = False  # in a clause naming a cause: "karena jembatan putus"
    circumstance: bool = False  # just after a time marker: "saat mengantar kotak suara"
    background: bool = False  # before a focus marker: "listrik mati, yang lebih penting: ..."
    cleared: bool = False  # before an all-clear word: "logistik *aman*"
    voided: bool = False  # before a false alarm: "ada yg teriak 'pisau', *ternyata cuma* payung"
    negation: tuple[int, int] | None = None  # token span of the negator and this word, for the why


@lru_cache(maxsize=1)
def _sastrawi() -> object:
    return StemmerFactory().create_stemmer()


@lru_cache(maxsize=65_536)
def sastrawi_root(word: str) -> str:
    """The Indonesian root of `word` by PySastrawi's dictionary stemmer ("dibacok" -> "bacok").

    Sastrawi knows standard Indonesian morphology (confixes, nasal assimilation, reduplication)
    and checks each candidate against its root dictionary, so it does not over-strip ("lembar"
    stays "lembar"). A word it does not know comes back unchanged.
    """
    return str(_sastrawi().stem(word))  # type: ignore[attr-defined]


@lru_cache(maxsize=1)
def _sastrawi_roots() -> frozenset[str]:
    return frozenset(w for w in StemmerFactory().get_words() if w)


@lru_cache(maxsize=65_536)
def is_dictionary_word(word: str) -> bool:
    """A correctly spelt Indonesian word: its Sastrawi root is in Sastrawi's root dictionary.

    Such a word is never read as a misspelling of another ("bergerak" is not "gertak",
    "mengeluh" is not "gelut").
    """
    return sastrawi_root(word) in _sastrawi_roots()


def collapse_repeats(word: str) -> str:
    """All runs of one letter to one letter: 'bnjiir' -> 'bnjir', 'ballot' -> 'balot'."""
    return _DOUBLES.sub(r"\1", word)


class Tokenizer:
    """Splits text into normalized tokens: lowercase, no punctuation, slang expanded."""

    def __init__(self, rules: TextRules) -> None:
        self._slang = {k.lower(): tuple(v.lower().split()) for k, v in rules.slang.items()}
        self._breaks = frozenset(w.lower() for w in rules.clause_breaks)
        self._cache: dict[tuple[str, bool], tuple[str, ...]] = {}

    def words(self, term: str) -> tuple[str, ...]:
        """Normalize a lexicon term the way report text is normalized, so the two always meet."""
        out: list[str] = []
        for piece in term.split():
            if piece == NUMBER:
                out.append(NUMBER)
            else:
                out.extend(tok.word for tok in self.tokenize(piece))
        return tuple(out)

    def tokenize(self, text: str) -> list[Token]:
        """Tokens of `text`; `start`/`end` index the NFKC-normalized text."""
        tokens: list[Token] = []
        clause = 0
        for m in _RAW.finditer(text):
            kind = m.lastgroup or ""
            start, end = m.span()
            if kind == "brk":
                clause += 1
                continue
            if kind == "thousands":
                value = int(re.sub(r"[.,]", "", m.group(kind)))
                tokens.append(Token(str(value), start, end, clause, number=value))
                continue
            if kind == "number":
                digits = m.group(kind)[:9]
                tokens.append(Token(str(int(digits)), start, end, clause, number=int(digits)))
                continue
            if kind == "approx":
                tokens.append(Token("sekitar", start, end, clause))
                continue
            if kind == "abbr":
                tokens.append(Token(m.group(kind)[:-1].lower(), start, end - 1, clause))
                continue
            for word in self._normalize(m.group(kind), kind == "word"):
                if word in self._breaks:
                    clause += 1
                    continue
                if tokens and tokens[-1].word == word and tokens[-1].clause == clause:
                    tokens[-1].end = end  # "bagi bagi", "test test": reduplication
                    continue
                tokens.append(Token(word, start, end, clause))
        return tokens

    def _normalize(self, raw: str, hyphenated: bool) -> tuple[str, ...]:
        """Normalized words of one written word (cached: field vocabularies are small)."""
        key = (raw, hyphenated)
        words = self._cache.get(key)
        if words is None:
            out: list[str] = []
            previous = None
            parts = re.split(r"['-]", raw.lower()) if hyphenated else [raw.lower()]
            if len(parts) == 2 and parts[1] in (parts[0] + "an", parts[0] + "kan"):
                parts = ["saling", parts[0]]  # "dorong-dorongan", "pukul-pukulan": done to each other
            for part in parts:
                if not part or part == previous:  # "orang-orang": reduplication means plural
                    continue
                previous = part
                out.extend(self._slang.get(_TRIPLES.sub(r"\1", part), (_TRIPLES.sub(r"\1", part),)))
            words = tuple(out)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = words
        return words


class LemmaResolver:
    """Maps a normalized word to the lexicon words it can stand for.

    In order: the word itself and its affix-stripped forms ("dibagikan" -> "bagi"); a known
    ordinary word stops there; then the forms with doubled letters collapsed; then one edit
    (insert, delete, substitute, swap) for words of `fuzzy.min_length` letters or more.
    """

    def __init__(self, rules: TextRules, vocabulary: Iterable[str]) -> None:
        self._rules = rules
        self._vocab = frozenset(vocabulary)
        places = (p.lower() for p in rules.places if " " not in p)
        self._known = frozenset(w.lower() for w in rules.known_words) | {p for p in places if not is_dictionary_word(p)}
        self._particles = tuple(sorted(rules.particles, key=len, reverse=True))
        self._suffixes = tuple(sorted(rules.suffixes, key=len, reverse=True))
        self._prefixes = tuple(sorted(rules.prefixes.items(), key=lambda kv: -len(kv[0])))
        initial = set(rules.initial_prefixes)
        self._inner_prefixes = tuple(kv for kv in self._prefixes if kv[0] not in initial)
        off_dictionary = {**rules.regional_prefixes, **rules.spoken_prefixes}
        self._regional = tuple(sorted(off_dictionary.items(), key=lambda kv: -len(kv[0])))
        self._english = tuple(rules.english_suffixes.items())
        self._collapsed: dict[str, set[str]] = {}
        for word in self._vocab:
            self._collapsed.setdefault(collapse_repeats(word), set()).add(word)
        self._deletes: dict[str, set[str]] = {}
        n = rules.fuzzy.min_length
        for word in self._vocab:
            if len(word) >= n and word.isalpha():
                for variant in (word, *_deletions(word)):
                    self._deletes.setdefault(variant, set()).add(word)
        self._neighbours = _keyboard_neighbours(rules.fuzzy.keyboard_rows)
        self._cache: dict[str, frozenset[str]] = {}

    @property
    def vocabulary(self) -> frozenset[str]:
        return self._vocab

    def resolve(self, word: str) -> frozenset[str]:
        """The lexicon words `word` can stand for (empty when none)."""
        hit = self._cache.get(word)
        if hit is None:
            hit = self._resolve(word)
            if len(self._cache) > 100_000:  # unbounded vocabularies in the wild: keep memory flat
                self._cache.clear()
            self._cache[word] = hit
        return hit

    def _resolve(self, word: str) -> frozenset[str]:
        if not word.isalpha():
            return frozenset({word}) & self._vocab
        if word in self._known:
            return frozenset({word}) & self._vocab
        forms = self.forms(word)
        exact = frozenset(f for f in forms if f in self._vocab)
        if exact:
            return exact
        collapsed = {w for f in forms for w in self._collapsed.get(collapse_repeats(f), ())}
        if collapsed:
            return frozenset(collapsed)
        if is_dictionary_word(word):  # a real word, spelt right: not a slip for a lexicon word
            return frozenset()
        rules = self._rules.fuzzy
        fuzzy_hits: set[str] = set()
        for f in forms:
            if len(f) < rules.min_length:
                continue
            for variant in (f, *_deletions(f)):
                for cand in self._deletes.get(variant, ()):
                    if rules.same_first_letter and cand[0] != f[0]:
                        continue
                    if _within_one_edit(f, cand, self._neighbours):
                        fuzzy_hits.add(cand)
            if fuzzy_hits:
                break
        return frozenset(fuzzy_hits)

    def forms(self, word: str) -> list[str]:
        """The word and its candidate stems, most literal first ("kebanjiran" -> ..., "banjir")."""
        minimum = self._rules.min_stem
        out = [word]
        seen = {word}
        root = sastrawi_root(word)  # the dictionary stemmer first: its root is the most reliable form
        if root != word and len(root) >= minimum:
            out.append(root)
            seen.add(root)

        def add(form: str) -> None:
            if len(form) >= minimum and form not in seen:
                seen.add(form)
                out.append(form)

        for suffix, replacements in self._english:
            if word.endswith(suffix) and len(word) > len(suffix) + 2:
                stem = word[: -len(suffix)]
                for r in replacements:
                    add(stem + r)
                if stem[-1] == stem[-2] and stem[-1] not in _VOWELS:  # "stabbed" -> "stab"
                    add(stem[:-1])
        bases = [word]
        for particle in self._particles:
            if word.endswith(particle) and len(word) - len(particle) >= minimum:
                bases.append(word[: -len(particle)])
                break
        for base in list(bases):
            for suffix in self._suffixes:
                if base.endswith(suffix) and len(base) - len(suffix) >= minimum:
                    bases.append(base[: -len(suffix)])
        for base in bases:
            add(base)
            for once in self._strip_prefix(base):
                add(once)
                for twice in self._strip_prefix(once, self._inner_prefixes):
                    add(twice)
        if self._regional and not is_dictionary_word(word):  # "natikam": na- + tikam; "napas" stays
            for base in bases:
                for once in self._strip_prefix(base, self._regional):
                    add(once)
        return out

    def _strip_prefix(self, word: str, prefixes: tuple[tuple[str, list[str]], ...] | None = None) -> list[str]:
        out: list[str] = []
        for prefix, replacements in self._prefixes if prefixes is None else prefixes:
            if not word.startswith(prefix):
                continue
            rest = word[len(prefix) :]
            if len(rest) < self._rules.min_stem:
                continue
            for r in replacements:
                # nasal assimilation: "memukul" = mem + pukul, only before a vowel
                if r and rest[0] not in _VOWELS:
                    continue
                out.append(r + rest)
        return out


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _keyboard_neighbours(rows: list[str]) -> dict[str, frozenset[str]]:
    """Keys next to each key (same row and the rows above and below, offset like a phone keyboard)."""
    place = {ch: (r, c) for r, row in enumerate(rows) for c, ch in enumerate(row)}
    out: dict[str, frozenset[str]] = {}
    for ch, (r, c) in place.items():
        out[ch] = frozenset(
            other for other, (r2, c2) in place.items() if other != ch and abs(r2 - r) <= 1 and c - 1 <= c2 <= c + 1
        )
    return out


def _within_one_edit(a: str, b: str, neighbours: dict[str, frozenset[str]]) -> bool:
    """Within one typing slip: a letter left out or added, two letters swapped, or a neighbour key hit.

    A substitution of a letter by a distant one is refused: it usually makes a different real
    word ("lebat" is not "lebam", "memasang" is not "parang").
    """
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            i = diffs[0]
            return b[i] in neighbours.get(a[i], frozenset())
        if len(diffs) != 2 or diffs[1] != diffs[0] + 1:
            return False
        i, j = diffs
        return a[i] == b[j] and a[j] == b[i]  # two neighbouring letters swapped
    short, long_ = (a, b) if la < lb else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


def nfkc(text: str) -> str:
    """Unicode compatibility form: full-width digits and ligatures become plain ones."""
    return unicodedata.normalize("NFKC", text)
