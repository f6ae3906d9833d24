"""The escalation policy: data the administrator edits, validated before it takes effect."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.dispatch.classify import SeverityRules
from siaga.contracts import STAKEHOLDERS, Stakeholder
from siaga.events import Category, Phase, Severity
from siaga.models import PolicyVersion

log = logging.getLogger("siaga.dispatch.policy")

DEFAULT_FILE = Path(__file__).parent / "data" / "policy.yaml"
WEEK_MINUTES = 7 * 24 * 60  # no duration in the policy is longer (nor NaN, nor infinite)


class SpreadRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_incidents: int = Field(default=3, ge=2, le=10000)
    window_minutes: float = Field(default=30, gt=0, le=WEEK_MINUTES, allow_inf_nan=False)
    severity_step: int = Field(default=1, ge=0, le=3)
    level: int = Field(default=2, ge=1, le=3)
    categories_excluded: list[Category] = Field(
        default_factory=lambda: [Category.SILENT_POST, Category.ESCORT_OVERDUE, Category.COVERAGE, Category.OTHER]
    )


class MinOnDuty(BaseModel):
    """The fewest people a TPS in an operating phase must have on duty (SPEC section 9)."""

    model_config = ConfigDict(extra="forbid")
    police: int = Field(default=1, ge=0, le=100, description="On duty and not Linmas.")
    people: int = Field(default=2, ge=0, le=100, description="Everyone on duty, Linmas included.")


class EscalationPolicy(BaseModel):
    """Everything SPEC section 5 leaves to policy. `version` is the stored version in force."""

    model_config = ConfigDict(extra="forbid")

    version: int = 0
    severity: SeverityRules = Field(default_factory=SeverityRules)
    local_window_minutes: dict[Severity, float] = Field(
        default_factory=lambda: {Severity.LOW: 30.0, Severity.MEDIUM: 15.0, Severity.HIGH: 5.0}
    )
    late_grace_seconds: float = Field(default=30, ge=0, le=WEEK_MINUTES * 60, allow_inf_nan=False)
    ack_timeout_minutes: dict[int, float] = Field(default_factory=lambda: {1: 5.0, 2: 5.0, 3: 5.0})
    reminder_minutes: float = Field(default=5, gt=0, le=WEEK_MINUTES, allow_inf_nan=False)
    grouping_minutes: float = Field(default=30, ge=0, le=WEEK_MINUTES, allow_inf_nan=False)
    spread: SpreadRule = Field(default_factory=SpreadRule)
    silent_post_minutes: float = Field(default=30, gt=0, le=WEEK_MINUTES, allow_inf_nan=False)
    operating_phases: list[Phase] = Field(
        default_factory=lambda: [Phase.OPENING, Phase.VOTING, Phase.COUNTING, Phase.TRANSPORT]
    )
    stakeholders: dict[Category, list[Stakeholder]] = Field(default_factory=dict)
    order_ack_minutes: float = Field(default=5, gt=0, le=WEEK_MINUTES, allow_inf_nan=False)
    escort_grace_minutes: float = Field(default=15, ge=0, le=WEEK_MINUTES, allow_inf_nan=False)
    min_on_duty: MinOnDuty = Field(default_factory=MinOnDuty)
    max_duty_hours: float = Field(default=16, gt=0, le=24, allow_inf_nan=False)
    silence_max_hours: float = Field(
        default=24, gt=0, le=WEEK_MINUTES / 60, allow_inf_nan=False, description="The longest silence allowed."
    )
    alerts: dict[str, Any] | None = None

    @field_validator("local_window_minutes")
    @classmethod
    def _windows(cls, v: dict[Severity, float]) -> dict[Severity, float]:
        missing = {Severity.LOW, Severity.MEDIUM, Severity.HIGH} - set(v)
        if missing:
            raise ValueError(f"needs a window for {sorted(m.value for m in missing)}")
        if not all(0 < x <= WEEK_MINUTES for x in v.values()):
            raise ValueError(f"windows must be more than 0 and at most {WEEK_MINUTES} minutes")
        return v

    @field_validator("ack_timeout_minutes")
    @classmethod
    def _ack(cls, v: dict[int, float]) -> dict[int, float]:
        if set(v) != {1, 2, 3}:
            raise ValueError("needs an acknowledgement timeout for levels 1, 2 and 3")
        if not all(0 < x <= WEEK_MINUTES for x in v.values()):
            raise ValueError(f"timeouts must be more than 0 and at most {WEEK_MINUTES} minutes")
        return v

    @field_validator("stakeholders", mode="before")
    @classmethod
    def _stakeholders(cls, v: Any) -> Any:
        for cat, names in v.items() if isinstance(v, dict) else ():
            unknown = {n for n in names if isinstance(n, str)} - set(STAKEHOLDERS) if isinstance(names, list) else set()
            if unknown:
                raise ValueError(f"{cat}: unknown stakeholder {sorted(unknown)}; known: {list(STAKEHOLDERS)}")
        return v

    def window(self, severity: Severity) -> timedelta | None:
        """The on-site window for a severity; None for critical (no window)."""
        minutes = self.local_window_minutes.get(severity)
        return None if severity is Severity.CRITICAL or minutes is None else timedelta(minutes=minutes)

    def ack_timeout(self, level: int) -> timedelta:
        return timedelta(minutes=self.ack_timeout_minutes.get(level, 5))

    def document(self) -> dict[str, Any]:
        """The policy as the administrator edits it (without the stored version)."""
        return self.model_dump(mode="json", exclude={"version"})


class PolicyError(ValueError):
    """A policy document that cannot take effect; the message says what is wrong."""


def parse_policy(doc: Any) -> EscalationPolicy:
    """Validate a policy document (a dict, as from YAML or JSON), or raise PolicyError naming the problem."""
    if not isinstance(doc, dict):
        raise PolicyError("the policy must be a mapping of settings")
    try:
        policy = EscalationPolicy.model_validate({k: v for k, v in doc.items() if k != "version"})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors()[:10])
        raise PolicyError(problems) from exc
    if policy.alerts:
        from services.dispatch.notifier import AlertRouting

        try:
            AlertRouting.model_validate(policy.alerts)
        except ValidationError as exc:
            raise PolicyError(f"alerts: {exc.errors()[0]['msg']}") from exc
    return policy


def load_file(path: Path) -> EscalationPolicy:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
    return parse_policy(doc)


class PolicyStore:
    """The policy in force: the newest stored version; a changed policy file becomes a new version.

    Every dispatch instance checks the database every `refresh_s`, so a change reaches all of them
    without a restart.
    """

    def __init__(self, engine: Engine, *, file: Path | None = None, refresh_s: float = 2.0) -> None:
        self.engine, self.file, self.refresh_s = engine, file, refresh_s
        self._policy: EscalationPolicy | None = None
        self._checked = 0.0
        self._file_mtime: float | None = None

    def current(self) -> EscalationPolicy:
        if self._policy is None or time.monotonic() - self._checked > self.refresh_s:
            self._refresh()
        assert self._policy is not None
        return self._policy

    def put(self, doc: Any, *, by: str) -> EscalationPolicy:
        """Validate and store a new version; raises PolicyError and changes nothing when invalid."""
        policy = parse_policy(doc)
        with Session(self.engine) as s:
            row = PolicyVersion(body=policy.document(), created_at=datetime.now(UTC), created_by=by)
            s.add(row)
            s.commit()
            s.refresh(row)
            policy.version = row.version or 0
        log.info("policy version %s put in force by %s", policy.version, by)
        self._policy, self._checked = policy, time.monotonic()
        return policy

    def _refresh(self) -> None:
        self._checked = time.monotonic()
        self._import_file_if_changed()
        with Session(self.engine) as s:
            row = s.exec(select(PolicyVersion).order_by(col(PolicyVersion.version).desc())).first()
        if row is None:
            base = load_file(self.file or DEFAULT_FILE)
            self.put(base.document(), by="default" if self.file is None else f"file:{self.file}")
            return
        if self._policy is None or self._policy.version != row.version:
            policy = parse_policy(row.body)
            policy.version = row.version or 0
            self._policy = policy

    def _import_file_if_changed(self) -> None:
        if self.file is None:
            return
        try:
            mtime = self.file.stat().st_mtime
        except OSError:
            return
        if self._file_mtime is None:
            self._file_mtime = mtime
            with Session(self.engine) as s:
                if s.exec(select(PolicyVersion)).first() is not None:
                    return  # already seeded; the stored versions stay in force
        elif mtime == self._file_mtime:
            return
        self._file_mtime = mtime
        try:
            self.put(load_file(self.file).document(), by=f"file:{self.file}")
        except PolicyError as exc:
            log.error("policy file %s refused, the previous policy stays in force: %s", self.file, exc)
