"""docs/configuration.md lists exactly the settings the code reads."""

from scripts.gen_config_doc import DOC, render


def test_configuration_doc_is_current() -> None:
    assert DOC.read_text() == render(), "run: python scripts/gen_config_doc.py"
