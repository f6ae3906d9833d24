"""The report classifier: shared examples, negation, numbers, payload precedence, rawan, facts, rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.dispatch.classify import DEFAULT_LEXICON_FILES, Assessment, Classifier, Facts, SeverityRules, severity_for
from siaga.events import Category, Severity

# A copy of shared/examples/reports.jsonl kept in the repo, so the tests never depend on a folder
# beside the checkout; test_the_copy_of_the_shared_examples_is_current compares the two.
EXAMPLES = Path(__file__).parents[1] / "data" / "shared" / "reports.jsonl"
SHARED_EXAMPLES = Path(__file__).parents[3] / "shared" / "examples" / "reports.jsonl"


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.default()


def assess(
    clf: Classifier, description: str, payload: dict[str, Any] | None = None, rawan: list[str] | None = None
) -> Assessment:
    p = payload or {}
    return clf.assess(
        description=description,
        category=Category(p["category"]) if p.get("category") else None,
        injuries=p.get("injuries"),
        weapons=p.get("weapons"),
        crowd_size=p.get("crowd_size"),
        rawan=rawan or [],
        rules=SeverityRules(),
    )


def _examples(path: Path = EXAMPLES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- the shared examples ---------------------------------------------------------------------------
def test_the_copy_of_the_shared_examples_is_current() -> None:
    """Where shared/ lies beside the checkout (as for a developer and CI), the repo's copy matches it."""
    if not SHARED_EXAMPLES.exists():
        pytest.skip(f"no shared/ beside the checkout ({SHARED_EXAMPLES}): nothing to compare the copy with")
    assert _examples() == _examples(SHARED_EXAMPLES), "copy shared/examples/reports.jsonl to tests/data/shared/"


@pytest.mark.parametrize("example", _examples(), ids=lambda e: e["description"][:40])
def test_shared_example(clf: Classifier, example: dict[str, Any]) -> None:
    a = assess(clf, example["description"], example["payload"], example["rawan"])
    got = [a.category.value, a.severity.value]
    assert got in example["expect"], f"{example['description']!r}: got {got}, why {a.why}"


# -- categories ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("bnjiiir lagiii di tps", Category.FLOOD),  # repeated letters, misspelling
        ("TPS kebnjiran", Category.FLOOD),  # one letter left out, affixes
        ("bagi2 duit ke warga", Category.MONEY_POLITICS),  # "2" reduplication, slang
        ("pembagian amplop", Category.MONEY_POLITICS),  # pe-an affix
        ("Petugas dikeroyok orang-orang", Category.VIOLENCE),
        ("HT rusak", Category.EQUIPMENT),
        ("serangan fajar di RT 2", Category.MONEY_POLITICS),  # a phrase hides "serangan" (attack)
        ("saksi diancam akan dibunuh", Category.INTIMIDATION),  # the killing is a threat
        ("Kotak suara belum datang", Category.LOGISTICS),  # "belum" is the problem, not a negation
        ("hoaks di grup WA bahwa ada kerusuhan", Category.HOAX),  # the riot is the rumour
        ("Someone set fire to the tent", Category.FIRE),
        ("laporan tanpa keterangan", Category.OTHER),
        ("", Category.OTHER),
    ],
)
def test_category(clf: Classifier, text: str, category: Category) -> None:
    got, why = clf.category(text)
    assert got is category, why
    assert why and why[0].startswith(f"category {category}")


def test_category_why_quotes_the_deciding_words(clf: Classifier) -> None:
    _, why = clf.category("TPS terendam banjir")
    assert why == ['category flood from text: "terendam", "banjir"'] or why == [
        'category flood from text: "banjir", "terendam"'
    ]


def test_pukul_with_a_number_is_a_time_not_a_blow(clf: Classifier) -> None:
    assert clf.category("Kotak suara belum datang sampai pukul 07.00")[0] is Category.LOGISTICS
    assert clf.category("Saksi dipukul pendukung")[0] is Category.VIOLENCE


def test_all_clear_words_cancel_the_word_before(clf: Classifier) -> None:
    assert clf.category("Listrik aman, logistik lengkap, situasi kondusif")[0] is Category.OTHER
    assert clf.category("Listrik padam, logistik lengkap")[0] is Category.EQUIPMENT
    # "lengkap" of clothes and names is "full": nothing before it is cleared
    assert clf.category("Lurah berseragam dinas lengkap ikut kampanye paslon 1")[0] is Category.NEUTRALITY


@pytest.mark.parametrize("place", ["Semarang", "Sempur", "Semanggi", "Cimahi"])
def test_a_place_name_is_no_weapon_by_stacked_prefixes(clf: Classifier, place: str) -> None:
    """se- then a spoken nasal m- would leave "parang" of "Semarang": the nasal only opens a word."""
    facts, why = clf.facts(f"Mobil logistik dari {place} tertahan macet di tol")
    assert not facts.weapons, why
    assert clf.category(f"Mobil logistik dari {place} tertahan macet di tol")[0] is not Category.VIOLENCE


def _place_names() -> list[str]:
    """The places of the lexicon and every kecamatan and desa of the demo's Serang registry."""
    import csv

    from services.dispatch.classify.lexicon import load_lexicon

    names = set(load_lexicon(DEFAULT_LEXICON_FILES).text.places)
    with (Path(__file__).parents[2] / "siaga" / "demo" / "data" / "serang_tps.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            names |= {row["kecamatan"], row["desa"]}
    return sorted(names)


def test_a_place_name_is_no_incident(clf: Classifier) -> None:
    """ "di Serang" is no attack, "dari Malang" no road barrier, "Demak" no fever (demam)."""
    wrong = []
    for place in _place_names():
        for text in (f"Laporan dari {place}, semua TPS sudah buka", f"Kab. {place}: pemungutan suara dimulai"):
            facts, why = clf.facts(text)
            category, cwhy = clf.category(text)
            if category is not Category.OTHER or facts.weapons or facts.injuries or facts.crowd_size:
                wrong.append(f"{text!r}: {category.value}, {cwhy + why}")
    assert len(_place_names()) > 300
    assert not wrong, "\n".join(wrong)


def test_a_place_name_that_is_a_word_is_still_the_word_elsewhere(clf: Classifier) -> None:
    assert clf.category("Massa serang TPS 4 pakai batu")[0] is Category.VIOLENCE  # serang: attack
    assert clf.category("Laporan dari Serang: massa serang TPS 4 pakai batu")[0] is Category.VIOLENCE


def test_the_nasal_prefix_still_opens_a_word(clf: Classifier) -> None:
    assert clf.facts("pelaku mukul saksi pakai parang")[0].weapons
    assert clf.category("pendukung mukulin saksi")[0] is Category.VIOLENCE


@pytest.mark.parametrize(
    "text",
    [
        # without scoring.focus both read as equipment
        "Genset sempat mati 10 menit tapi sudah nyala lagi. Yang lebih penting: ada orang bagi amplop di dekat TPS",
        "Power outage and the generator failed, lights off. More importantly, someone gave out envelopes",
    ],
)
def test_what_the_report_says_matters_more_decides(clf: Classifier, text: str) -> None:
    assert clf.category(text)[0] is Category.MONEY_POLITICS


# -- negation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "tidak ada korban",
        "nihil korban",
        "korban nihil",
        "no injuries",
        "tdk ada yg terluka",
        "gk ada korban luka",
        "no one was injured",
    ],
)
def test_negated_injuries_are_not_facts(clf: Classifier, text: str) -> None:
    facts, why = clf.facts(text)
    assert facts.injuries == 0, why
    assert any(line.startswith("no injuries") for line in why)


@pytest.mark.parametrize("text", ["tanpa senjata", "tidak membawa senjata", "no weapons", "without a knife"])
def test_negated_weapons_are_not_facts(clf: Classifier, text: str) -> None:
    assert clf.facts(text)[0].weapons is False


def test_negation_stops_at_the_clause(clf: Classifier) -> None:
    facts, _ = clf.facts("Tidak ada korban jiwa, namun 4 orang luka-luka")
    assert (facts.deaths, facts.injuries) == (0, 4)


def test_negated_category_words_score_nothing(clf: Classifier) -> None:
    assert clf.category("situasi aman, tidak ada keributan")[0] is Category.OTHER
    # but a missing thing is the logistics problem itself
    assert clf.category("tinta tidak ada")[0] is Category.LOGISTICS


def test_threats_are_not_facts(clf: Classifier) -> None:
    facts, _ = clf.facts("mengancam akan membakar TPS dan membunuh petugas")
    assert facts == Facts()
    facts, _ = clf.facts("KPPS received death threats")
    assert facts.deaths == 0


# -- numbers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "injuries"),
    [
        ("dua orang luka ringan", 2),
        ("2 org luka", 2),
        ("satu korban luka parah", 1),
        ("korban luka 3 orang", 3),
        ("three people injured", 3),
        ("dua puluh lima orang terluka", 25),
        ("warga terluka", 1),
        ("luka", 1),
    ],
)
def test_injury_counts(clf: Classifier, text: str, injuries: int) -> None:
    facts, why = clf.facts(text)
    assert facts.injuries == injuries, why


@pytest.mark.parametrize(
    ("text", "crowd"),
    [
        ("sekitar 300 orang massa", 300),
        ("Massa kurang lebih 70 orang berkumpul", 70),
        ("ratusan massa berkumpul", 300),
        ("puluhan orang berkumpul", 30),
        ("massa ±250 orang", 250),
        ("About 500 people gathered", 500),
        ("dua ratus lima puluh orang massa", 250),
        ("massa datang, jumlahnya seratus lebih", 100),
        ("1.500 orang massa", 1500),
        # a figure in the millions is money or ballots, not people
        ("massa berkumpul, dana yang disita totalnya 12 juta", 0),
        ("massa berkumpul, jumlahnya 3 juta", 0),
    ],
)
def test_crowd_sizes(clf: Classifier, text: str, crowd: int) -> None:
    facts, why = clf.facts(text)
    assert facts.crowd_size == crowd, why


@pytest.mark.parametrize(
    "text",
    [
        "Surat suara kurang 25 lembar",  # a unit: things, not people
        "TPS 300 banjir",  # a label
        "bagi amplop 100 ribu ke 60 warga",  # counted people, but no crowd gathering
        "air setinggi 50 cm",
    ],
)
def test_numbers_that_are_not_crowds(clf: Classifier, text: str) -> None:
    assert clf.facts(text)[0].crowd_size == 0


def test_weapons_and_arson_from_text(clf: Classifier) -> None:
    facts, why = clf.facts("pelaku bawa celurit, kantor PPS sengaja dibakar")
    assert facts.weapons and facts.deliberate_fire, why
    assert clf.facts("Api dari dapur merambat, rumah terbakar")[0].deliberate_fire is False
    assert clf.facts("Api membakar bengkel")[0].deliberate_fire is False  # the fire burned it: no arsonist


def test_device_words_are_not_people(clf: Classifier) -> None:
    assert clf.facts("radio battery is dead")[0].deaths == 0
    assert clf.facts("warga tewas")[0].deaths == 1


# -- payload precedence ----------------------------------------------------------------------------
def test_payload_facts_win_over_text(clf: Classifier) -> None:
    a = assess(clf, "keributan, ada yg bawa celurit, dua orang luka", {"weapons": False, "injuries": 0})
    assert (a.facts.weapons, a.facts.injuries) == (False, 0)
    assert a.severity is Severity.HIGH  # violence's base, no floors
    assert "no weapons from payload" in a.why and "no injuries from payload" in a.why
    assert not any(line.startswith(("weapons from text", "injuries 2 from text")) for line in a.why)


def test_text_fills_what_the_payload_left_out(clf: Classifier) -> None:
    a = assess(clf, "ada yang bawa golok, 1 org luka", {"category": "violence"})
    assert a.category is Category.VIOLENCE and a.severity is Severity.CRITICAL
    assert a.facts.weapons and a.facts.injuries == 1
    assert "category violence from device" in a.why
    assert any(line.startswith("severity critical: weapons with injuries") for line in a.why)


def test_payload_crowd_wins(clf: Classifier) -> None:
    a = assess(clf, "massa berkumpul sekitar 300 orang", {"crowd_size": 40})
    assert (a.category, a.severity, a.facts.crowd_size) == (Category.CROWD, Severity.MEDIUM, 40)


def test_device_category_other_means_classify_the_text(clf: Classifier) -> None:
    a = assess(clf, "pembagian sembako oleh timses", {"category": "other"})
    assert a.category is Category.MONEY_POLITICS
    assert "device said other" in a.why[0]


def test_hoax_text_facts_raise_nothing(clf: Classifier) -> None:
    a = assess(clf, "Video editan kotak suara dibakar beredar di Twitter")
    assert (a.category, a.severity) == (Category.HOAX, Severity.LOW)


# -- rawan and severity ----------------------------------------------------------------------------
def test_rawan_steps_up_only_for_its_category(clf: Classifier) -> None:
    assert assess(clf, "TPS terendam banjir", rawan=["flood"]).severity is Severity.HIGH
    assert assess(clf, "TPS terendam banjir", rawan=["crowd", "remote"]).severity is Severity.MEDIUM
    a = assess(clf, "dua orang luka", {"category": "traffic"}, rawan=["traffic"])
    assert a.severity is Severity.CRITICAL
    assert any(line.startswith("rawan traffic: one step up") for line in a.why)


def test_rawan_never_goes_above_critical() -> None:
    sev, why = severity_for(Category.FIRE, Facts(deliberate_fire=True), ["fire"], SeverityRules())
    assert sev is Severity.CRITICAL
    assert why[-1] == "rawan fire: already critical"


@pytest.mark.parametrize(
    ("category", "facts", "expected"),
    [
        (Category.MONEY_POLITICS, Facts(), Severity.LOW),
        (Category.MONEY_POLITICS, Facts(weapons=True), Severity.HIGH),
        (Category.MEDICAL, Facts(deaths=1), Severity.HIGH),
        (Category.VIOLENCE, Facts(weapons=True, deaths=1), Severity.CRITICAL),
        (Category.VIOLENCE, Facts(weapons=True, injuries=2), Severity.CRITICAL),
        (Category.CROWD, Facts(crowd_size=49), Severity.MEDIUM),
        (Category.CROWD, Facts(crowd_size=50), Severity.HIGH),
        (Category.CROWD, Facts(crowd_size=200), Severity.CRITICAL),
        (Category.OTHER, Facts(deliberate_fire=True), Severity.CRITICAL),
        (Category.SILENT_POST, Facts(), Severity.MEDIUM),
    ],
)
def test_fact_floors(category: Category, facts: Facts, expected: Severity) -> None:
    assert severity_for(category, facts, [], SeverityRules())[0] is expected


def test_floors_apply_before_the_rawan_step() -> None:
    # crowd 60: medium -> high (floor), then rawan -> critical
    sev, why = severity_for(Category.CROWD, Facts(crowd_size=60), ["crowd"], SeverityRules())
    assert sev is Severity.CRITICAL
    assert why == [
        "severity medium: base for crowd",
        "severity high: crowd 60 >= 50",
        "rawan crowd: one step up to critical",
    ]


def test_custom_rules_from_a_policy_document() -> None:
    rules = SeverityRules.model_validate({"base": {"hoax": "medium"}})
    assert rules.base["hoax"] is Severity.MEDIUM


def test_custom_rules() -> None:
    rules = SeverityRules(base={"hoax": Severity.MEDIUM}, crowd_high=10, crowd_critical=20, rawan_step=2)
    assert rules.base["hoax"] is Severity.MEDIUM and rules.base["violence"] is Severity.HIGH  # others keep defaults
    assert severity_for(Category.HOAX, Facts(), ["hoax"], rules)[0] is Severity.CRITICAL
    assert severity_for(Category.CROWD, Facts(crowd_size=20), [], rules)[0] is Severity.CRITICAL


# -- facts merge -----------------------------------------------------------------------------------
def test_facts_merge_takes_max_counts_and_any_flag() -> None:
    a = Facts(injuries=2, weapons=True, crowd_size=30)
    b = Facts(injuries=1, deaths=1, crowd_size=300, deliberate_fire=True)
    assert a.merge(b) == Facts(injuries=2, deaths=1, weapons=True, crowd_size=300, deliberate_fire=True)
    assert a.merge(b) == b.merge(a)
    assert Facts().merge(Facts()) == Facts()


# -- rules validation ------------------------------------------------------------------------------
def test_severity_rules_refuse_an_unknown_base_category() -> None:
    with pytest.raises(ValueError, match="violance"):
        SeverityRules.model_validate({"base": {"violance": "high"}})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": {"flood": "urgent"}},
        {"crowd_high": 0},
        {"crowd_high": 300, "crowd_critical": 200},
        {"rawan_step": -1},
        {"surprise": 1},
    ],
)
def test_severity_rules_refuse_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SeverityRules.model_validate(kwargs)


def test_severity_rules_defaults_are_spec_section_5() -> None:
    rules = SeverityRules()
    assert (rules.crowd_high, rules.crowd_critical, rules.rawan_step) == (50, 200, 1)
    assert {c.value for c in Category} == set(rules.base)
    high = {k for k, v in rules.base.items() if v is Severity.HIGH}
    low = {k for k, v in rules.base.items() if v is Severity.LOW}
    assert high == {"violence", "fire", "escort_overdue"}
    assert low == {"money_politics", "neutrality", "equipment", "traffic", "hoax", "other"}


# -- lexicon files ---------------------------------------------------------------------------------
def test_an_extra_lexicon_file_extends_the_defaults(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("categories:\n  flood:\n    groups:\n      core:\n        weight: 3\n        terms: [rembesan]\n")
    clf = Classifier.from_files(*DEFAULT_LEXICON_FILES, extra)
    assert clf.category("ada rembesan di TPS")[0] is Category.FLOOD
    assert clf.category("Kotak suara hilang")[0] is Category.LOGISTICS  # defaults kept


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("categories:\n  flod:\n    groups: {core: {weight: 3, terms: [air]}}\n", "flod"),
        ("categories:\n  flood:\n    groups: {core: {weight: -1, terms: [air]}}\n", "weight"),
        ("categories:\n  flood:\n    requires: [nope]\n    groups: {core: {weight: 1, terms: [air]}}\n", "nope"),
        ("scoring:\n  priority: [violence, typhoon]\n", "typhoon"),
        ("facts:\n  numbers:\n    units: {dua: -2}\n", "negative"),
        ("categories: [flood\n", "YAML"),
        ("- just a list\n", "mapping"),
    ],
)
def test_a_bad_lexicon_file_is_refused_with_its_problem(tmp_path: Path, content: str, problem: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    with pytest.raises(ValueError, match=problem) as err:
        Classifier.from_files(*DEFAULT_LEXICON_FILES, bad)
    assert "bad.yaml" in str(err.value)


def test_a_missing_lexicon_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        Classifier.from_files(tmp_path / "nope.yaml")


def test_default_is_loaded_once() -> None:
    assert Classifier.default() is Classifier.default()


# -- rules added after batch 17 ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Monyet nyolong kertas di meja KPPS, udah diusir", Category.OTHER),  # an animal is no intruder
        ("orang gila teriak2 di depan bilik, dibawa pulang", Category.OTHER),  # nor a disturbed person a crowd
        ("Tikus gigit kabel genset, listrik mati", Category.EQUIPMENT),  # enough evidence still wins
        ("ada ular di TPS, satu pemilih digigit", Category.MEDICAL),  # a bite keeps its weight
        ("Warga bersuara keras minta hitung ulang, massa berkumpul", Category.CROWD),  # "keras" is not "kera"
    ],
)
def test_an_animal_or_a_disturbed_person_as_the_subject(clf: Classifier, text: str, category: Category) -> None:
    assert clf.category(text)[0] is category


def test_the_subject_is_named_in_the_why(clf: Classifier) -> None:
    category, why = clf.category("Kucing liar tidur di bilik suara")
    assert category is Category.OTHER
    assert '"Kucing"' in why[0]


def test_a_yes_no_question_is_doubt(clf: Classifier) -> None:
    a = assess(clf, "apakah ada senjata? warga lihat orang mencurigakan dekat kotak suara")
    assert not a.facts.weapons
    a = assess(clf, "siapa yang bawa golok tadi? saksi dikejar")  # a wh-question takes the golok as given
    assert a.facts.weapons


def test_a_hit_person_near_a_shot_is_a_wound(clf: Classifier) -> None:
    a = assess(clf, "orang tak dikenal nembak pakai senapan angin, kena dua warga")
    assert (a.category, a.severity) == (Category.VIOLENCE, Severity.CRITICAL)
    a = assess(clf, "orang tak dikenal nembak pakai senapan angin, kena tiang listrik")
    assert a.severity is Severity.HIGH  # a post is not a person


def test_a_slip_is_an_injury_unless_ruled_out(clf: Classifier) -> None:
    assert clf.facts("pemilih kepleset di depan bilik")[0].injuries == 1
    assert clf.facts("pemilih kepleset di depan bilik, tidak ada yang luka")[0].injuries == 0


def test_a_time_marker_says_when_not_what(clf: Classifier) -> None:
    assert clf.category("Saksi dihadang preman sewaktu membawa formulir C1")[0] is Category.INTIMIDATION
    assert clf.category("Petugas dikeroyok ketika amankan massa di depan balai")[0] is Category.VIOLENCE


def test_an_emblem_is_no_weapon(clf: Classifier) -> None:
    assert not clf.facts("spanduk bergambar palu arit dipasang di pagar")[0].weapons


def test_not_reaching_blows_is_no_fight(clf: Classifier) -> None:
    assert clf.category("saksi debat sama KPPS soal formulir, tidak sampai baku hantam")[0] is Category.LOGISTICS


def test_officers_on_duty_are_no_crowd_but_still_count_as_hurt(clf: Classifier) -> None:
    facts, _ = clf.facts("Puluhan org demo di depan KPU, ada 1.910 personel gabungan jaga")
    assert facts.crowd_size == 30  # the protesters, not the police deployed around them
    assert clf.facts("300 aparat berjaga, massa berkumpul")[0].crowd_size == 0
    assert clf.facts("2 personel polisi luka kena lemparan batu")[0].injuries == 2


def test_people_who_come_armed_are_a_crowd(clf: Classifier) -> None:
    facts, _ = clf.facts("ratusan orang dari kampung sebelah datang bawa panah dan parang")
    assert facts.crowd_size == 300 and facts.weapons
    assert clf.facts("bagi uang ke 60 warga")[0].crowd_size == 0  # counted people alone are still no crowd


def test_a_false_alarm_voids_what_came_before_it(clf: Classifier) -> None:
    a = assess(clf, "Ada yg teriak 'bawa pisau', setelah dicek ternyata cuma gagang payung, pemilih lanjut antre")
    assert (a.category, a.severity, a.facts.weapons) == (Category.OTHER, Severity.LOW, False)
    assert clf.category("Dikira ada yg bawa pistol, ternyata hanya mainan")[0] is Category.OTHER
    # With no alarm raised first, "ternyata cuma" is a shortfall, not a false alarm.
    assert clf.category("kotak suara datang, ternyata cuma 3 dari 5")[0] is Category.LOGISTICS


def test_a_turnout_figure_and_a_kind_of_voter_are_no_voter_list_problem(clf: Classifier) -> None:
    assert clf.category("tps 8 aman, yg udh nyoblos 180 dr DPT 250 org, blm ada kendala")[0] is Category.OTHER
    assert clf.category("DPT di TPS ini 280 orang tapi yg hadir baru 90, sepi")[0] is Category.OTHER
    assert clf.category("a DPK voter threatened the officers over his marked ballot")[0] is Category.INTIMIDATION
    assert clf.category("DPT ganda ditemukan 15 nama")[0] is Category.LOGISTICS
    # A name missing from the list is the problem itself, not a negation of what came before.
    assert clf.category("ratusan warga protes namanya tidak ada di DPT")[0] is Category.CROWD
    assert clf.category("nama 20 pemilih tidak ada di DPT")[0] is Category.LOGISTICS


def test_a_threat_told_as_only_words_is_intimidation(clf: Classifier) -> None:
    a = assess(clf, "timses bilang kalo kalah balai desa mau dibakar. baru omongan, blm ada tindakan")
    assert (a.category, a.facts.deliberate_fire) == (Category.INTIMIDATION, False)


def test_an_estimate_with_the_approximation_after_the_number_is_a_crowd(clf: Classifier) -> None:
    assert clf.facts("orang su bakumpul di muka TPS, seratus lebih")[0].crowd_size == 100
    assert clf.facts("sumbangan 50 lebih dari biasanya, warga berkumpul")[0].crowd_size == 0  # a comparison


def test_a_vote_tally_is_a_result_not_a_problem(clf: Classifier) -> None:
    text = "Rekap PPS selesai: DPT 4.312, hadir 3.108, paslon 1 dapat 1.702, paslon 2 dapat 1.281, tidak sah 125"
    assert clf.category(text)[0] is Category.OTHER
    assert clf.category("Candidate 1: 188, candidate 2: 64, spoiled ballots: 5. No incidents.")[0] is Category.OTHER
    assert clf.category("kades suruh warga pilih paslon 2")[0] is Category.NEUTRALITY


def test_regional_words_are_not_misread_as_lexicon_words(clf: Classifier) -> None:
    # Banjar "pajah" (out, of power) is no "panah" (arrow); English "both" is no "booth".
    a = assess(clf, "di TPS 4 listrik pajah, KPPS ngitung pakai senter hp, genset kada hidup jua")
    assert (a.category, a.severity, a.facts.weapons) == (Category.EQUIPMENT, Severity.LOW, False)
    assert clf.category("Two KPPS members collapsed from exhaustion; both are on IV drips at the clinic")[0] is (
        Category.MEDICAL
    )
    # Manado: "dapa tikam piso" (stabbed with a knife) is a wound with a weapon.
    facts, _ = clf.facts("satu saksi dapa tikam piso di lengan, so bawa ke RS")
    assert facts.injuries == 1 and facts.weapons


def test_a_petrol_bomb_is_a_deliberate_fire(clf: Classifier) -> None:
    a = assess(clf, "A man threw a petrol bomb at the PPK office; it hit the fence and burned out. Nobody was hurt.")
    assert (a.category, a.facts.deliberate_fire) == (Category.FIRE, True)


def test_a_promise_of_money_is_vote_buying(clf: Classifier) -> None:
    assert clf.category("kalau pilih no 2 nanti dikasih 50rb")[0] is Category.MONEY_POLITICS
    assert clf.category("tim caleg bilang nanti ditransfer 100rb lewat dana")[0] is Category.MONEY_POLITICS
    assert clf.category("tidak ada yg dikasih 50rb")[0] is Category.OTHER  # a negation still cancels it


def test_a_threat_quoted_in_the_first_person_is_intimidation(clf: Classifier) -> None:
    a = assess(clf, "Saksi dapet WA: 'kalo besok masih jaga TPS, rumahmu kubakar'. Orangnya tetep dateng")
    assert (a.category, a.severity) == (Category.INTIMIDATION, Severity.MEDIUM)


def test_words_that_looked_like_partisanship_or_an_all_clear(clf: Classifier) -> None:
    # "lengkap dengan" is "complete with", not "complete and in order"
    text = "guru ASN unggah video dukungan untuk paslon nomor 1 lengkap dengan seragam dinas"
    assert clf.category(text)[0] is Category.NEUTRALITY
    # raising two fingers is a campaign sign, not brandishing; asking for direction is no steering
    assert clf.category("12 kades ngacungin dua jari bareng teriak '02 sekali putaran'")[0] is Category.NEUTRALITY
    assert clf.category("OTK acungin golok ke saksi")[0] is Category.INTIMIDATION
    assert clf.category("tps 07 blm buka jm 7.40, ketuanya blm dtg, tlg arahan")[0] is Category.OTHER


def test_a_road_closed_by_a_fire_elsewhere_is_a_detour(clf: Classifier) -> None:
    text = "Jalan masuk ke TPS 3 ditutup damkar krn ada ruko kebakaran di ujung gang, pemilih muter lewat gang belakang"
    assert clf.category(text)[0] is Category.TRAFFIC
    text = "A WhatsApp chain message says voters must bring a photocopy of their KTP; KPPS confirm the e-KTP is enough"
    assert clf.category(text)[0] is Category.HOAX


def test_a_debunked_rumour_stays_a_hoax_but_its_violence_is_void(clf: Classifier) -> None:
    text = (
        "A voice note doing the rounds in the WhatsApp group says a KPPS chairman was stabbed and the polling "
        "station is on fire. We checked with the Polsek: nothing of the kind happened."
    )
    a = assess(clf, text)
    assert (a.category, a.severity, a.facts.weapons) == (Category.HOAX, Severity.LOW, False)
    # A report corrected as mistaken is no incident either.
    text = "yg dilaporin ribut di TPS 14 tadi keliru, gak ada perkelahian sama sekali, cuma debat soal parkir"
    assert clf.category(text)[0] is Category.OTHER


def test_not_found_negates_what_follows_as_well_as_what_comes_before(clf: Classifier) -> None:
    assert not clf.facts("Satu saksi luka robek di pelipis. Tidak ditemukan senjata tajam")[0].weapons
    assert clf.facts("korban tidak ditemukan")[0].injuries == 0


def test_what_is_already_done_is_in_order_but_not_what_is_not_yet(clf: Classifier) -> None:
    assert clf.category("kotak suara sudah disegel, C hasil sudah diteken semua saksi")[0] is Category.OTHER
    assert clf.category("kotak suara belum disegel")[0] is Category.LOGISTICS
    assert clf.category("Opening done at 07:05, seals on every box intact. Nothing to report.")[0] is Category.OTHER


def test_a_threat_of_consequences_is_intimidation(clf: Classifier) -> None:
    text = "didatangi empat orang minta suara satu kampung diserahkan, 'kalau tidak, kam tanggung sendiri'"
    assert clf.category(text)[0] is Category.INTIMIDATION
    assert clf.category("told him his food stall won't be standing tomorrow; he's rattled")[0] is Category.INTIMIDATION
