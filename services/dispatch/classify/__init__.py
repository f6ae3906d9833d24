"""Classification of field incident reports: category, facts, severity and the reasons why.

A weighted lexicon and rule classifier for WhatsApp-style Indonesian (and English) report text.
Its lexicons are YAML files in `data/`; see docs/classification.md.
"""

from services.dispatch.classify.classifier import Assessment, Classifier
from services.dispatch.classify.facts import Facts
from services.dispatch.classify.lexicon import DEFAULT_LEXICON_FILES
from services.dispatch.classify.severity import SeverityRules, severity_for

__all__ = ["DEFAULT_LEXICON_FILES", "Assessment", "Classifier", "Facts", "SeverityRules", "severity_for"]
