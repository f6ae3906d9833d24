"""Severity of an incident from its category, its facts and the TPS's rawan list (SPEC section 5)."""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.dispatch.classify.facts import Facts
from siaga.events import Category, Severity

_DEFAULTS_FILE = Path(__file__).parent / "data" / "severity.yaml"


@cache
def _defaults() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(_DEFAULTS_FILE.read_text(encoding="utf-8"))
    return loaded


def _default_base() -> dict[str, Severity]:
    return {k: Severity(v) for k, v in _defaults()["base"].items()}


class SeverityRules(BaseModel):
    """The severity part of the escalation policy; defaults are SPEC section 5 (data/severity.yaml).

    `base` may name only some categories: the others keep their default base. An unknown
    category name is refused, so a typo cannot silently leave a category at its default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: dict[str, Severity] = Field(default_factory=_default_base)
    crowd_high: int = Field(default_factory=lambda: int(_defaults()["crowd_high"]), ge=1)
    crowd_critical: int = Field(default_factory=lambda: int(_defaults()["crowd_critical"]), ge=1)
    rawan_step: int = Field(default_factory=lambda: int(_defaults()["rawan_step"]), ge=0, le=3)

    @field_validator("base")
    @classmethod
    def _complete(cls, v: dict[str, Severity]) -> dict[str, Severity]:
        known = {c.value for c in Category}
        unknown = sorted(k for k in v if k not in known)
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {sorted(known)}")
        return {**_default_base(), **v}

    @model_validator(mode="after")
    def _ordered(self) -> SeverityRules:
        if self.crowd_critical < self.crowd_high:
            raise ValueError(f"crowd_critical ({self.crowd_critical}) must not be below crowd_high ({self.crowd_high})")
        return self


_STEP_WORDS = {0: "no step", 1: "one step up", 2: "two steps up", 3: "three steps up"}


def severity_for(
    category: Category, facts: Facts, rawan: Collection[str], rules: SeverityRules
) -> tuple[Severity, list[str]]:
    """Base severity of the category, raised by the fact floors, then the rawan step.

    Returns the severity and the reasons, one line for each rule that changed it.
    """
    severity = rules.base.get(category.value, Severity.LOW)
    why = [f"severity {severity}: base for {category}"]
    hurt = facts.injuries > 0 or facts.deaths > 0
    hurt_words = "deaths" if facts.deaths > 0 and facts.injuries == 0 else "injuries"

    critical_reason = None
    if facts.weapons and hurt:
        critical_reason = f"weapons with {hurt_words}"
    elif facts.deliberate_fire:
        critical_reason = "deliberate fire"
    elif facts.crowd_size >= rules.crowd_critical:
        critical_reason = f"crowd {facts.crowd_size} >= {rules.crowd_critical}"

    if critical_reason is not None:
        if severity is not Severity.CRITICAL:
            why.append(f"severity critical: {critical_reason}")
        severity = Severity.CRITICAL
    else:
        high_reasons = []
        if facts.weapons:
            high_reasons.append("weapons")
        if hurt:
            high_reasons.append(hurt_words)
        if facts.crowd_size >= rules.crowd_high:
            high_reasons.append(f"crowd {facts.crowd_size} >= {rules.crowd_high}")
        if high_reasons and severity.rank < Severity.HIGH.rank:
            why.append(f"severity high: {', '.join(high_reasons)}")
            severity = Severity.HIGH

    if category.value in rawan and rules.rawan_step > 0:
        raised = severity.step_up(rules.rawan_step)
        step = _STEP_WORDS.get(rules.rawan_step, f"{rules.rawan_step} steps up")
        if raised is severity:
            why.append(f"rawan {category}: already critical")
        else:
            why.append(f"rawan {category}: {step} to {raised}")
        severity = raised
    return severity, why
