"""Alert messages from the template files: what each must say, in Indonesian and English."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from services.dispatch.notifier import AlertIntent
from services.dispatch.notifier.messages import TEMPLATES, load_templates, render
from tests.fakes import alert_intent

NOW = datetime(2024, 11, 27, 8, 10, tzinfo=UTC)  # 1 h 25 min after the incident opened
URL = "https://siaga.polres-serang.example"


def message(language: str, **kw: Any) -> Any:
    return render(AlertIntent.model_validate(alert_intent(**kw)), language=language, public_url=URL + "/", now=NOW)


@pytest.mark.parametrize(
    ("language", "words"),
    [
        (
            "id",
            [
                "TPS 001 Cikande",
                "SRG-CKD-001",
                "Cikande",
                "Kekerasan",
                "Tinggi",
                "Polres",
                "Keributan antar pendukung",
                "korban luka: 2",
                "senjata",
                "1 jam 25 menit",
            ],
        ),
        (
            "en",
            [
                "TPS 001 Cikande",
                "SRG-CKD-001",
                "Cikande",
                "Violence",
                "High",
                "Polres",
                "Keributan antar pendukung",
                "injured: 2",
                "weapons",
                "1 h 25 min",
            ],
        ),
    ],
)
def test_message_names_everything_a_responder_needs(language: str, words: list[str]) -> None:
    m = message(language)
    text = m.plain()
    for word in words:
        assert word in text, f"{word!r} missing from the {language} message:\n{text}"
    assert f"{URL}/#incident/INC-20241127-0001" in text
    assert m.link == f"{URL}/#incident/INC-20241127-0001"
    assert "crowd" not in text and "massa" not in text  # a fact with no value says nothing


def test_languages_differ_and_indonesian_is_what_the_labels_say() -> None:
    assert message("id").title == "SIAGA Polres: Kekerasan (Tinggi) di TPS 001 Cikande (SRG-CKD-001)"
    assert message("en").title == "SIAGA Polres: Violence (High) at TPS 001 Cikande (SRG-CKD-001)"


def test_level_labels_follow_the_ladder() -> None:
    assert "Polsek" in message("id", level=1).title
    assert "Polda/Brimob" in message("id", level=3).title


def test_stakeholder_message_names_the_stakeholder_and_the_incident_level() -> None:
    m = message("id", level=1, audience="stakeholder", stakeholder="bpbd", category="flood", severity="medium")
    assert m.title.startswith("SIAGA untuk BPBD: Banjir (Sedang)")
    level = next(f for f in m.fields if f.name == "level")
    assert level.value == "Polres"  # the incident stands at level 2 (public_incident)


def test_reminder_is_said() -> None:
    m = message("id", level=3, reminder=2)
    assert m.title.startswith("PENGINGAT ke-2: ")
    assert "ke-2, belum ada tanggapan" in m.plain()
    assert "Pengingat" not in message("id").plain()


def test_area_incident_names_the_kecamatan() -> None:
    m = message("en", tps_id=None, tps_name=None, kecamatan="Kragilan", category="crowd", severity="critical")
    assert "several TPS in Kecamatan Kragilan" in m.title
    assert not any(f.name == "tps" for f in m.fields)


def test_telegram_html_escapes_what_came_from_the_field() -> None:
    html = message("id", description="<script>alert(1)</script> & more").telegram_html()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp; more" in html
    assert html.startswith("<b>SIAGA")


def test_slack_blocks_carry_the_link() -> None:
    blocks = message("en").slack_blocks()
    assert blocks[0]["type"] == "header"
    assert f"<{URL}/#incident/INC-20241127-0001|" in blocks[-1]["text"]["text"]


def test_whatsapp_parameters_are_single_line_and_in_template_order() -> None:
    m = message("id", description="baris satu\nbaris   dua\t\ttiga")
    values = m.whatsapp_values
    assert len(values) == len(load_templates("id").whatsapp_parameters) == 8
    assert all("\n" not in v and "\t" not in v and "    " not in v and v for v in values)
    assert values[0] == "TPS 001 Cikande (SRG-CKD-001)"
    assert values[-1].endswith("#incident/INC-20241127-0001")


def test_long_descriptions_are_cut() -> None:
    m = message("id", description="x" * 5000)
    assert len(next(f for f in m.fields if f.name == "description").value) <= 500


def test_template_files_have_the_same_keys() -> None:
    def keys(d: Any, prefix: str = "") -> set[str]:
        if not isinstance(d, dict):
            return set()
        out = set()
        for k, v in d.items():
            # Label tables are checked for the same entries too; the words differ.
            out |= {f"{prefix}{k}"} | keys(v, f"{prefix}{k}.")
        return out

    docs = {lang: yaml.safe_load((TEMPLATES / f"{lang}.yaml").read_text(encoding="utf-8")) for lang in ("id", "en")}
    assert keys(docs["id"]) == keys(docs["en"])


def test_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="no alert templates"):
        load_templates("fr")
