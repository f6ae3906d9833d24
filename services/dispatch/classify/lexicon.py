"""The classifier's lexicon files: their schema, loading, merging and validation.

A lexicon is one or more YAML files whose top-level sections (`text`, `negation`, `scoring`,
`categories`, `facts`) are merged in order: mappings merge key by key, lists are concatenated,
a later scalar replaces an earlier one. So an extra file needs only the words it adds. The merged
document is validated as a whole; any problem raises `ValueError` naming the files and the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from siaga.events import SYSTEM_CATEGORIES, Category

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_LEXICON_FILES: tuple[Path, ...] = (
    DATA_DIR / "text.yaml",
    DATA_DIR / "categories.yaml",
    DATA_DIR / "facts.yaml",
)

# Categories a text can be classified into: the system categories are raised by Siaga, `other` is the fallback.
TEXT_CATEGORIES = frozenset(c.value for c in Category if c not in SYSTEM_CATEGORIES and c is not Category.OTHER)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _clean_terms(terms: list[str]) -> list[str]:
    cleaned = [t.strip() for t in terms]
    if any(not t for t in cleaned):
        raise ValueError("a term is empty")
    return cleaned


class FuzzyRules(_Strict):
    min_length: int = Field(default=5, ge=3, description="Only words this long are matched with one edit.")
    same_first_letter: bool = Field(default=True, description="Misspellings rarely change the first letter.")
    keyboard_rows: list[str] = Field(
        default_factory=lambda: ["qwertyuiop", "asdfghjkl", "zxcvbnm"],
        description="a substituted letter must be a neighbour key: 'panas' is not a typo of 'panah'",
    )


class TextRules(_Strict):
    """How a report's words are normalized before they are looked up."""

    slang: dict[str, str] = Field(default_factory=dict, description="abbreviation or slang -> words")
    known_words: list[str] = Field(
        default_factory=list, description="ordinary words that are never stemmed or fuzzy-matched"
    )
    particles: list[str] = Field(default_factory=list, description="clitics stripped first: -nya, -lah")
    suffixes: list[str] = Field(default_factory=list, description="derivational suffixes: -kan, -an, -i")
    prefixes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="prefix -> what may replace it; a non-empty replacement applies before a vowel only",
    )
    initial_prefixes: list[str] = Field(
        default_factory=list,
        description="prefixes that only open a word (the nasal meN- and its spoken forms): never stripped after "
        "another prefix, so semarang is not se- + m- + parang",
    )
    spoken_prefixes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="the spoken nasal prefixes (mukul: pukul), stripped only from words that are not standard "
        "Indonesian, so malang is no palang",
    )
    regional_prefixes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="regional prefixes (Makassar and Bugis passive na-, ni-: natikam, nibunuh), stripped only "
        "from words that are not standard Indonesian, so napas and nilai keep their letters",
    )
    english_suffixes: dict[str, list[str]] = Field(default_factory=dict)
    places: list[str] = Field(
        default_factory=list,
        description="place names (kabupaten, kota, kecamatan): never stemmed or fuzzy-matched (Demak is not "
        "demam), and after a place marker never a category word (di Serang, Kab. Malang)",
    )
    place_markers: list[str] = Field(default_factory=list, description="words before a place name: di, kec, kota")
    min_stem: int = Field(default=3, ge=2)
    clause_breaks: list[str] = Field(default_factory=list, description="words that end a clause: tapi, but")
    fuzzy: FuzzyRules = FuzzyRules()

    def place_phrases(self) -> list[str]:
        """ "di serang", "kab malang": a place marker and a place name, which hide the name's words."""
        return [f"{m} {p}" for m in self.place_markers for p in self.places]


class NegationRules(_Strict):
    """Words that cancel or weaken what follows (or precedes) them."""

    negators: list[str] = Field(description="cancel a fact that follows: tidak, tanpa, no")
    strict_negators: list[str] = Field(description="also cancel a category word that follows: tidak ada")
    post_negators: list[str] = Field(description="cancel a word before them: korban nihil")
    hypothetical: list[str] = Field(description="what follows did not happen (yet): akan, jika; threats")
    all_clear: list[str] = Field(
        default_factory=list, description="cancel the category word just before them: logistik aman, listrik normal"
    )
    not_negating: list[str] = Field(
        default_factory=list, description="phrases with a negator that negate nothing after them: tak dikenal"
    )
    false_alarm: list[str] = Field(
        default_factory=list,
        description="what the report said before them was a false alarm: ternyata cuma (gagang payung)",
    )
    false_alarm_cues: list[str] = Field(
        default_factory=list,
        description="a false_alarm marker acts only after one of these: dikira, teriak, heboh",
    )
    question_openers: list[str] = Field(
        default_factory=list,
        description="a clause they open that ends in '?' asks whether it happened: ada bom?, apakah ada korban?",
    )
    window: int = Field(default=3, ge=1, le=10)
    post_window: int = Field(default=2, ge=1, le=10)
    all_clear_window: int = Field(default=2, ge=1, le=20, description="words before an all-clear word it covers")
    hypothetical_window: int = Field(default=4, ge=1, le=10)
    adjacent_window: int = Field(
        default=0,
        ge=0,
        le=3,
        description="words right after a plain negator that it also cancels for the categories: belum ricuh",
    )


class ReportedSpeech(_Strict):
    markers: list[str] = Field(description="words that start reported content: bahwa, katanya")
    factor: float = Field(default=0.5, ge=0, le=1)
    cue_category: str = "hoax"
    min_cue: float = Field(default=2.0, ge=0)


class FocusRule(_Strict):
    markers: list[str] = Field(description="words after which the point of the report comes: yang lebih penting")
    factor: float = Field(default=0.5, ge=0, le=1)


class CauseClause(_Strict):
    markers: list[str] = Field(description="words after which the clause names a cause: karena, akibat, due to")
    factor: float = Field(default=0.5, ge=0, le=1)
    window: int | None = Field(default=None, ge=1, description="words it reaches; none: the rest of the clause")


def known_categories(v: list[str]) -> list[str]:
    """The list, if it names only text categories; else the error that names the unknown ones."""
    unknown = [c for c in v if c not in TEXT_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; known: {sorted(TEXT_CATEGORIES)}")
    return v


TextCategories = Annotated[list[str], AfterValidator(known_categories)]


class HazardRule(_Strict):
    hazards: list[str] = Field(description="categories that damage things: fire, flood")
    objects: list[str] = Field(description="categories named by the thing damaged: logistics")
    min_weight: float = Field(default=3.0, gt=0, description="a hazard term at least this strong")
    factor: float = Field(default=0.5, ge=0, le=1)


class NuisanceRule(_Strict):
    subjects: list[str] = Field(description="an animal or a disturbed person: anjing, ular, orang gila")
    exempt: TextCategories = Field(
        default_factory=list, description="categories such a subject can still cause: medical (a bite), traffic"
    )
    factor: float = Field(default=0.4, ge=0, le=1)


class ScoringRules(_Strict):
    """How category scores are combined and compared."""

    priority: TextCategories = Field(description="tie-break order of categories, first wins")
    min_score: float = Field(default=1.5, gt=0, description="below this the text is `other`")
    hypothetical_factor: float = Field(default=0.5, ge=0, le=1)
    blockers: list[str] = Field(default_factory=list, description="phrases that hide their words: pukul #")
    reported_speech: ReportedSpeech | None = None
    cause: CauseClause | None = Field(
        default=None, description="a cause named elsewhere weighs less than the problem here"
    )
    circumstance: CauseClause | None = Field(
        default=None, description="a time marker (saat, ketika): the few words after it say when, not what"
    )
    focus: FocusRule | None = Field(
        default=None, description="a report that says what matters more: what it said before weighs less"
    )
    hazard: HazardRule | None = Field(
        default=None, description="a hazard striking election property: the hazard is the point"
    )
    nuisance: NuisanceRule | None = Field(
        default=None, description="an animal or a disturbed person as the subject: the other words weigh less"
    )
    max_why_words: int = Field(default=4, ge=1)
    text_facts_ignored_for: list[str] = Field(
        default_factory=list, description="categories whose text describes rumours, not events: hoax"
    )


FACT_LISTS = ("injury", "death", "weapon", "arson")


class TermGroup(_Strict):
    weight: float = Field(gt=0, le=10)
    terms: list[str] = Field(default_factory=list)
    include: list[str] = Field(
        default_factory=list, description=f"fact word lists whose words are terms here too: {FACT_LISTS}"
    )

    @field_validator("terms")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        return _clean_terms(v)

    @field_validator("include")
    @classmethod
    def _fact_lists(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in FACT_LISTS]
        if unknown:
            raise ValueError(f"unknown fact lists {unknown}; known: {list(FACT_LISTS)}")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> TermGroup:
        if not self.terms and not self.include:
            raise ValueError("a group needs terms or include")
        return self


class CategoryLexicon(_Strict):
    negatable: bool = Field(
        default=True, description="`tidak ada X` cancels X; not for logistics, where absence is the problem"
    )
    requires: list[str] = Field(default_factory=list, description="groups that must each match for the category")
    promised: bool = Field(
        default=False,
        description="a promise is the offence itself, so hypotheticals do not weaken its words: "
        "`kalau pilih no 2 nanti dikasih 50rb` is vote buying",
    )
    groups: dict[str, TermGroup]

    @model_validator(mode="after")
    def _requires_exist(self) -> CategoryLexicon:
        missing = [g for g in self.requires if g not in self.groups]
        if missing:
            raise ValueError(f"requires names groups that do not exist: {missing}")
        return self


class NumberWords(_Strict):
    units: dict[str, int] = Field(description="satu: 1, seratus: 100")
    add: dict[str, int] = Field(default_factory=dict, description="belas: 10 (added to the number before)")
    multipliers: dict[str, int] = Field(default_factory=dict, description="puluh: 10, ratus: 100")
    big_multipliers: dict[str, int] = Field(default_factory=dict, description="ribu: 1000, juta")
    quantities: dict[str, int] = Field(default_factory=dict, description="puluhan: 30, ratusan: 300")

    @field_validator("units", "add", "multipliers", "big_multipliers", "quantities")
    @classmethod
    def _non_negative(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k, n in v.items() if n < 0]
        if bad:
            raise ValueError(f"negative numbers for {bad}")
        return v


class FactGuard(_Strict):
    """Words near a fact word that show it is not that fact: "baterai mati", "api membakar"."""

    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    window: int = Field(default=2, ge=1, le=6)


class FactRules(_Strict):
    injury: list[str]
    death: list[str]
    weapon: list[str]
    passive_prefixes: list[str] = Field(
        default_factory=list, description="an act done with a weapon, in the passive, is a wound: di(tikam)"
    )
    struck: list[str] = Field(
        default_factory=list, description="words before a weapon that make it a wound: terkena (panah)"
    )
    mishap: list[str] = Field(
        default_factory=list, description="a slip or fall: an injury unless the text rules injuries out"
    )
    body_parts: list[str] = Field(
        default_factory=list, description="a word of being hit before one of these is a wound: kena di paha"
    )
    weapon_use: list[str] = Field(
        default_factory=list,
        description="acts done with a weapon (bacok, tembak): a weapon when done, none when only threatened",
    )
    arson: list[str]
    person: list[str] = Field(description="nouns a number can count: orang, warga")
    crowd_noun: list[str] = Field(description="nouns that are a crowd by themselves: massa, pendukung")
    deployed: list[str] = Field(
        default_factory=list,
        description="people a number counts who are on duty, never a crowd: 1.910 personel, 300 aparat",
    )
    gather: list[str] = Field(description="words that make counted people a crowd: berkumpul, blokade")
    count_words: list[str] = Field(default_factory=list, description="jumlah, sebanyak")
    approx: list[str] = Field(default_factory=list, description="sekitar, kurang lebih")
    fillers: list[str] = Field(default_factory=list, description="words skipped between a number and its noun")
    units: list[str] = Field(default_factory=list, description="a number before these counts no people")
    labels: list[str] = Field(default_factory=list, description="a number after these is a label: TPS 12")
    numbers: NumberWords
    guards: dict[str, FactGuard] = Field(default_factory=dict, description="per fact list: injury, death, ...")
    ignore: list[str] = Field(
        default_factory=list, description="phrases that hide their words from the fact rules: death threat"
    )
    window: int = Field(default=3, ge=1, le=8)
    crowd_max: int = Field(
        default=100_000,
        ge=1,
        description="no crowd at a TPS or a kecamatan is larger: a count above it is money or ballots "
        "(totalnya 5,7 juta)",
    )

    @field_validator("guards")
    @classmethod
    def _guarded_lists(cls, v: dict[str, FactGuard]) -> dict[str, FactGuard]:
        unknown = [k for k in v if k not in FACT_LISTS]
        if unknown:
            raise ValueError(f"guards for unknown fact lists {unknown}; known: {list(FACT_LISTS)}")
        return v


class LexiconData(_Strict):
    text: TextRules
    negation: NegationRules
    scoring: ScoringRules
    categories: dict[str, CategoryLexicon]
    facts: FactRules

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, v: dict[str, CategoryLexicon]) -> dict[str, CategoryLexicon]:
        unknown = [c for c in v if c not in TEXT_CATEGORIES]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {sorted(TEXT_CATEGORIES)}")
        return v

    @model_validator(mode="after")
    def _cue_known(self) -> LexiconData:
        rs = self.scoring.reported_speech
        if rs is not None and rs.cue_category not in self.categories:
            raise ValueError(f"scoring.reported_speech.cue_category {rs.cue_category!r} has no lexicon")
        return self


def merge(base: Any, extra: Any) -> Any:
    """Merge two parsed YAML documents: mappings key by key, lists concatenated, scalars replaced."""
    if isinstance(base, Mapping) and isinstance(extra, Mapping):
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(out[key], value) if key in out else value
        return out
    if isinstance(base, list) and isinstance(extra, list):
        return base + [x for x in extra if x not in base]
    return extra


def load_lexicon(paths: Iterable[str | Path]) -> LexiconData:
    """Read, merge and validate lexicon files; raise ValueError naming the file and the problem."""
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("no lexicon files given")
    doc: Any = {}
    for path in files:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"lexicon file {path}: cannot be read ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"lexicon file {path}: not valid YAML: {exc}") from exc
        if loaded is None:
            continue
        if not isinstance(loaded, dict):
            raise ValueError(f"lexicon file {path}: must be a mapping of sections, got {type(loaded).__name__}")
        doc = merge(doc, loaded)
    names = ", ".join(str(p) for p in files)
    try:
        return LexiconData.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"lexicon ({names}) is invalid: {problems}") from exc
