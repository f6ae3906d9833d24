"""Facts of an incident (injuries, deaths, weapons, crowd size, arson) and how text yields them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.dispatch.classify.analysis import Analysis, Match, PhraseIndex
from services.dispatch.classify.lexicon import FACT_LISTS, FactRules
from services.dispatch.classify.text import Token, Tokenizer


@dataclass(frozen=True)
class Facts:
    """What is known of an incident beyond its category; 0/False when unknown or ruled out."""

    injuries: int = 0  # people hurt ("tidak ada korban" -> 0)
    deaths: int = 0
    weapons: bool = False
    crowd_size: int = 0
    deliberate_fire: bool = False  # arson: "dibakar", "sengaja dibakar", "pembakaran"

    def merge(self, other: Facts) -> Facts:
        """Facts of two reports of one incident: the larger count, either flag."""
        return Facts(
            injuries=max(self.injuries, other.injuries),
            deaths=max(self.deaths, other.deaths),
            weapons=self.weapons or other.weapons,
            crowd_size=max(self.crowd_size, other.crowd_size),
            deliberate_fire=self.deliberate_fire or other.deliberate_fire,
        )


# Kinds of fact words; the lexicon's list of the same name feeds each.
_KINDS = (
    "injury",
    "death",
    "weapon",
    "arson",
    "person",
    "crowd_noun",
    "deployed",
    "gather",
    "count_words",
    "struck",
    "mishap",
    "approx",
    "fillers",
    "units",
    "labels",
)
_COUNTED = frozenset({"injury", "death"})
_SKIPPABLE = frozenset({"person", "crowd_noun", "deployed", "approx", "fillers", "count_words"})


@dataclass(frozen=True, slots=True)
class _Count:
    value: int
    start: int  # token span of the evidence, for the why
    end: int


_BODY_SKIP = frozenset({"di", "bagian", "pada", "in", "on", "the", "his", "her"})  # "kena di paha"


class FactReader:
    """Reads facts from analysed text with the fact lexicon (data/facts.yaml)."""

    def __init__(self, rules: FactRules, tokenizer: Tokenizer, places: Iterable[str] = ()) -> None:
        self._rules = rules
        self._index: PhraseIndex[str] = PhraseIndex()
        for kind in _KINDS:
            for term in getattr(rules, kind):
                self._index.add(tokenizer.words(term), kind)
        for term in rules.weapon_use:
            self._index.add(tokenizer.words(term), "weapon_use")
        for term in rules.body_parts:
            self._index.add(tokenizer.words(term), "body")
        for kind, guard in rules.guards.items():
            for term in guard.before:
                self._index.add(tokenizer.words(term), f"before:{kind}")
            for term in guard.after:
                self._index.add(tokenizer.words(term), f"after:{kind}")
        for term in [*rules.ignore, *places]:  # places: "di serang", "kab malang"
            self._index.add(tokenizer.words(term), "ignore")

    def vocabulary(self) -> set[str]:
        """Every lexicon word the fact rules look for."""
        return self._index.words()

    def read(self, analysis: Analysis) -> tuple[Facts, list[tuple[str, str]]]:
        """Facts stated in the text, and why: (fact field, reason) for the words that stated or ruled them out."""
        tokens = analysis.tokens
        matches = self._index.find(tokens)
        at: dict[int, Match[str]] = {k: m for m in matches for k in range(m.start, m.end)}
        mentions, ruled_out = self._mentions(analysis, matches)
        if "injury" not in ruled_out:  # "terkena panah", "ditikam": hit by a weapon is a wound, unless none is stated
            mentions["injury"] += [
                m
                for m in mentions["weapon"]
                if self._struck_before(analysis, m.start, at) or self._passive_use(analysis, m)
            ]
            if mentions["weapon"]:  # "nembak pake senapan angin, kena 1 pemilih": a person hit is wounded
                mentions["injury"] += self._struck_people(analysis, matches, at)
            mentions["injury"] += self._struck_body(analysis, matches, at)  # "kena di paha": hit on the body
            mentions["injury"] += [  # "satu lansia terpeleset": a fall is taken to hurt, unless ruled out
                m
                for m in matches
                if "mishap" in m.labels and not tokens[m.start].negated and not tokens[m.start].hypothetical
            ]
        used: set[int] = set()  # number tokens already counting something
        hurt = self._hurt_counts(analysis, matches, at, mentions, used)
        crowd_counts = self._crowd_counts(analysis, matches, at, used)

        why: list[tuple[str, str]] = []
        injuries = self._count("injuries", hurt["injury"], mentions["injury"], ruled_out.get("injury"), analysis)
        deaths = self._count("deaths", hurt["death"], mentions["death"], ruled_out.get("death"), analysis)
        weapons = self._flag("weapons", mentions["weapon"], ruled_out.get("weapon"), analysis)
        arson = self._flag("deliberate fire", mentions["arson"], ruled_out.get("arson"), analysis)
        for field, (_, line) in zip(
            ("injuries", "deaths", "weapons", "deliberate_fire"), (injuries, deaths, weapons, arson), strict=True
        ):
            if line:
                why.append((field, line))
        crowd = 0
        if crowd_counts:
            best = max(crowd_counts, key=lambda c: c.value)
            crowd = best.value
            if crowd > 0:
                why.append(("crowd_size", f'crowd {crowd} from text: "{analysis.surface(best.start, best.end)}"'))
        facts = Facts(
            injuries=injuries[0], deaths=deaths[0], weapons=weapons[0], crowd_size=crowd, deliberate_fire=arson[0]
        )
        return facts, why

    def _mentions(
        self, analysis: Analysis, matches: list[Match[str]]
    ) -> tuple[dict[str, list[Match[str]]], dict[str, Match[str]]]:
        """Fact words that stand, and the first one ruled out (negated, hypothetical, guarded) per kind."""
        tokens = analysis.tokens
        mentions: dict[str, list[Match[str]]] = {k: [] for k in FACT_LISTS}
        ruled_out: dict[str, Match[str]] = {}
        for m in matches:
            first = tokens[m.start]
            for kind in FACT_LISTS:
                if kind not in m.labels:
                    continue
                # a threat is not an event, but a weapon shown in a threat is there; a threatened
                # stabbing ("akan membacok") shows none
                hypothetical = first.hypothetical and (kind != "weapon" or "weapon_use" in m.labels)
                if first.negated or hypothetical or self._guarded(m, kind, matches):
                    ruled_out.setdefault(kind, m)
                else:
                    mentions[kind].append(m)
        return mentions, ruled_out

    def _hurt_counts(
        self,
        analysis: Analysis,
        matches: list[Match[str]],
        at: dict[int, Match[str]],
        mentions: dict[str, list[Match[str]]],
        used: set[int],
    ) -> dict[str, list[_Count]]:
        """Counts of injuries and deaths; first, so "dua orang luka" counts the hurt, not a crowd of two."""
        tokens = analysis.tokens
        counts: dict[str, list[_Count]] = {"injury": [], "death": []}
        for i, tok in enumerate(tokens):  # "dua orang luka"
            if tok.number is None or tok.in_number or self._is_label_or_unit(analysis, i, at):
                continue
            counted = self._counted_after(analysis, i, at)
            if counted is not None:
                kind, m = counted
                if m in mentions[kind]:
                    counts[kind].append(_Count(tok.number, i, m.end))
                used.add(i)
        for m in matches:  # "korban luka 3 orang"
            kinds = set(m.labels) & _COUNTED
            if not kinds:
                continue
            number_at = self._number_after(analysis, m.end, at, tokens[m.start].clause)
            if number_at is None or number_at in used:
                continue
            kind = "death" if "death" in kinds else "injury"
            value = tokens[number_at].number
            if m in mentions[kind] and value is not None:
                counts[kind].append(_Count(value, m.start, self._after_number(analysis, number_at)))
            used.add(number_at)
        return counts

    def _crowd_counts(
        self, analysis: Analysis, matches: list[Match[str]], at: dict[int, Match[str]], used: set[int]
    ) -> list[_Count]:
        """Crowd sizes: "sekitar 300 orang massa", "massa kurang lebih 70 orang", "jumlahnya 60".

        Counted crowd nouns (massa, pendukung) are a crowd; other counted people (orang, warga)
        only in a report that also speaks of gathering, so "bagi uang ke 60 warga" is no crowd.
        """
        tokens = analysis.tokens
        strong: list[_Count] = []
        weak: list[_Count] = []
        for i, tok in enumerate(tokens):
            if tok.number is None or tok.in_number or i in used or self._is_label_or_unit(analysis, i, at):
                continue
            nouns = self._nouns_after(analysis, i, at)
            if any("deployed" in n.labels for n in nouns):  # "1.910 personel gabungan": a deployment
                used.add(i)
                continue
            if nouns:
                is_crowd = any("crowd_noun" in n.labels for n in nouns)
                (strong if is_crowd else weak).append(_Count(tok.number, i, nouns[-1].end))
                used.add(i)
        for m in matches:
            kinds = set(m.labels)
            if not kinds & {"crowd_noun", "count_words"}:
                continue
            number_at = self._number_after(analysis, m.end, at, tokens[m.start].clause)
            value = None if number_at is None or number_at in used else tokens[number_at].number
            if number_at is None or value is None:
                continue
            count = _Count(value, m.start, self._after_number(analysis, number_at))
            (strong if "crowd_noun" in kinds else weak).append(count)
            used.add(number_at)
        for i, tok in enumerate(tokens):  # "massa ... kira-kira 150an", "seratus lebih": an estimate, no noun after
            if (
                tok.number is None
                or tok.in_number
                or i in used
                or self._is_label_or_unit(analysis, i, at)
                or self._nouns_after(analysis, i, at)
            ):
                continue
            before, j = at.get(i - 1), self._after_number(analysis, i)
            after = at.get(j)
            if before is not None and "approx" in before.labels and tokens[i - 1].clause == tok.clause:
                weak.append(_Count(tok.number, i - 1, j))
                used.add(i)
            elif (
                after is not None
                and "approx" in after.labels
                and after.end == j + 1  # one word: "lebih", not "lebih dari" (a comparison)
                and tokens[j].clause == tok.clause
                and (after.end >= len(tokens) or tokens[after.end].word not in ("dari", "than"))
            ):
                weak.append(_Count(tok.number, i, after.end))
                used.add(i)
        # People who gather, or who come armed ("ratusan orang datang bawa panah"), are a crowd.
        gathering = any(
            set(m.labels) & {"gather", "crowd_noun", "weapon"} and not tokens[m.start].strictly_negated for m in matches
        )
        counts = strong + weak if gathering else strong
        return [c for c in counts if c.value <= self._rules.crowd_max]

    # -- helpers ------------------------------------------------------------------------------
    def _passive_use(self, analysis: Analysis, m: Match[str]) -> bool:
        word = analysis.tokens[m.start].word
        return "weapon_use" in m.labels and any(
            word.startswith(p) and len(word) > len(p) + 3 for p in self._rules.passive_prefixes
        )

    @staticmethod
    def _struck_people(analysis: Analysis, matches: list[Match[str]], at: dict[int, Match[str]]) -> list[Match[str]]:
        """A word of being hit before a person, maybe counted: "kena 1 pemilih", "hit two voters"."""

        def past_count(tokens: list[Token], k: int) -> int:
            if k < len(tokens) and tokens[k].number is not None:
                k += 1
                while k < len(tokens) and tokens[k].in_number:
                    k += 1
            return k

        return FactReader._struck(analysis, matches, at, "person", past_count)

    @staticmethod
    def _struck_body(analysis: Analysis, matches: list[Match[str]], at: dict[int, Match[str]]) -> list[Match[str]]:
        """A word of being hit before a part of the body, maybe after "di": "kena di paha", "hit in the head"."""

        def past_preposition(tokens: list[Token], k: int) -> int:
            end = k + 3
            while k < len(tokens) and k < end and tokens[k].word in _BODY_SKIP:
                k += 1
            return k

        return FactReader._struck(analysis, matches, at, "body", past_preposition)

    @staticmethod
    def _struck(
        analysis: Analysis,
        matches: list[Match[str]],
        at: dict[int, Match[str]],
        target: str,
        past: Callable[[list[Token], int], int],
    ) -> list[Match[str]]:
        """A word of being hit (not negated, not hypothetical), then, past the words `past` skips, a
        match labelled `target` in the same clause: a wound."""
        tokens = analysis.tokens
        out: list[Match[str]] = []
        for m in matches:
            first = tokens[m.start]
            if "struck" not in m.labels or first.negated or first.hypothetical:
                continue
            k = past(tokens, m.end)
            hit = at.get(k)
            if hit is not None and hit.start == k and target in hit.labels and tokens[k].clause == first.clause:
                out.append(Match(m.start, hit.end, ("injury",)))
        return out

    @staticmethod
    def _struck_before(analysis: Analysis, i: int, at: dict[int, Match[str]]) -> bool:
        before = at.get(i - 1)
        return (
            before is not None
            and "struck" in before.labels
            and analysis.tokens[i - 1].clause == analysis.tokens[i].clause
            and not analysis.tokens[i - 1].negated
        )

    def _guarded(self, m: Match[str], kind: str, matches: list[Match[str]]) -> bool:
        """A fact word whose neighbours show it is not the fact ("baterai mati", "api membakar")."""
        guard = self._rules.guards.get(kind)
        if guard is None:
            return False
        w = guard.window
        before, after = f"before:{kind}", f"after:{kind}"
        for other in matches:
            if before in other.labels and m.start - w <= other.start < m.start:
                return True
            if after in other.labels and m.end <= other.start < m.end + w:
                return True
        return False

    def _counted_after(self, analysis: Analysis, i: int, at: dict[int, Match[str]]) -> tuple[str, Match[str]] | None:
        """The injury or death word a number counts: "dua orang luka" -> ("injury", luka)."""
        tokens = analysis.tokens
        k, steps = self._after_number(analysis, i), 0
        while k < len(tokens) and tokens[k].clause == tokens[i].clause and steps <= self._rules.window:
            m = at.get(k)
            if m is None:
                return None
            hit = set(m.labels) & _COUNTED
            if hit:
                return ("death" if "death" in hit else "injury"), m
            if not set(m.labels) & _SKIPPABLE:
                return None
            k, steps = m.end, steps + 1
        return None

    def _nouns_after(self, analysis: Analysis, i: int, at: dict[int, Match[str]]) -> list[Match[str]]:
        """The people a number counts: "300 orang massa" -> [orang, massa]."""
        tokens = analysis.tokens
        nouns: list[Match[str]] = []
        k, steps = self._after_number(analysis, i), 0
        while k < len(tokens) and tokens[k].clause == tokens[i].clause and steps <= self._rules.window:
            m = at.get(k)
            if m is None or not set(m.labels) & _SKIPPABLE:
                break
            if set(m.labels) & {"person", "crowd_noun", "deployed"}:
                nouns.append(m)
            k, steps = m.end, steps + 1
        return nouns

    @staticmethod
    def _after_number(analysis: Analysis, i: int) -> int:
        k = i + 1
        while k < len(analysis.tokens) and analysis.tokens[k].in_number:
            k += 1
        return k

    def _is_label_or_unit(self, analysis: Analysis, i: int, at: dict[int, Match[str]]) -> bool:
        tokens = analysis.tokens
        before = at.get(i - 1)
        if before is not None and "labels" in before.labels and tokens[i - 1].clause == tokens[i].clause:
            return True
        after = at.get(self._after_number(analysis, i))
        return after is not None and "units" in after.labels

    def _number_after(self, analysis: Analysis, k: int, at: dict[int, Match[str]], clause: int) -> int | None:
        tokens = analysis.tokens
        steps = 0
        while k < len(tokens) and tokens[k].clause == clause and steps <= self._rules.window:
            tok = tokens[k]
            if tok.number is not None and not tok.in_number:
                return None if self._is_label_or_unit(analysis, k, at) else k
            m = at.get(k)
            if m is None or not set(m.labels) & (_SKIPPABLE | _COUNTED):
                return None
            k = m.end
            steps += 1
        return None

    @staticmethod
    def _count(
        name: str,
        counts: list[_Count],
        mentions: list[Match[str]],
        ruled_out: Match[str] | None,
        analysis: Analysis,
    ) -> tuple[int, str | None]:
        if counts:
            best = max(counts, key=lambda c: c.value)
            return best.value, f'{name} {best.value} from text: "{analysis.surface(best.start, best.end)}"'
        if mentions:
            m = mentions[0]
            return 1, f'{name} 1 from text: "{analysis.surface(m.start, m.end)}"'
        if ruled_out is not None:
            return 0, f'no {name} from text: "{_ruling_surface(analysis, ruled_out)}"'
        return 0, None

    @staticmethod
    def _flag(
        name: str, mentions: list[Match[str]], ruled_out: Match[str] | None, analysis: Analysis
    ) -> tuple[bool, str | None]:
        if mentions:
            words = ", ".join(dict.fromkeys(f'"{analysis.surface(m.start, m.end)}"' for m in mentions))
            return True, f"{name} from text: {words}"
        if ruled_out is not None:
            return False, f'no {name} from text: "{_ruling_surface(analysis, ruled_out)}"'
        return False, None


def _ruling_surface(analysis: Analysis, m: Match[str]) -> str:
    """The negator (or condition) with the word it rules out: "tidak ada korban", "akan membakar"."""
    tok = analysis.tokens[m.start]
    if tok.negation is not None:
        start, end = tok.negation
        return analysis.surface(min(start, m.start), max(end, m.end))
    return analysis.surface(m.start, m.end)
