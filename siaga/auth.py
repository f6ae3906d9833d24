"""Tokens: random, shown once, stored only as a SHA-256 hash, never logged.

Roles are ordered: viewer < operator < admin. Device tokens are separate and only post events.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from siaga.models import ApiToken


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return [Role.VIEWER, Role.OPERATOR, Role.ADMIN].index(self)


def new_token(prefix: str) -> str:
    """A fresh token; the prefix says what kind it is to a human reading it."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Scope:
    """The regions a viewer or operator token sees and acts in (SPEC section 10); None on a token: all.

    A kecamatan is named with its kabupaten (`Kabupaten Serang/Cikande`): kecamatan names repeat across
    the country. Something is in the scope when its provinsi, its kabupaten or its (kabupaten,
    kecamatan) is listed.
    """

    provinsi: frozenset[str] = frozenset()
    kabupaten: frozenset[str] = frozenset()
    kecamatan: frozenset[tuple[str, str]] = frozenset()  # (kabupaten, kecamatan)

    def admits(self, provinsi: str, kabupaten: str, kecamatan: str) -> bool:
        return provinsi in self.provinsi or kabupaten in self.kabupaten or (kabupaten, kecamatan) in self.kecamatan

    def document(self) -> dict[str, list[str]]:
        """As stored on the token and shown: the kecamatan as `kabupaten/kecamatan`."""
        return {
            "provinsi": sorted(self.provinsi),
            "kabupaten": sorted(self.kabupaten),
            "kecamatan": sorted(f"{k}/{c}" for k, c in self.kecamatan),
        }

    @classmethod
    def of(cls, doc: dict[str, list[str]] | None) -> Scope | None:
        if not doc:
            return None
        pairs = (name.split("/", 1) for name in doc.get("kecamatan", ()))
        return cls(
            frozenset(doc.get("provinsi", ())),
            frozenset(doc.get("kabupaten", ())),
            frozenset((p[0], p[1]) for p in pairs if len(p) == 2),
        )


@dataclass(frozen=True)
class Principal:
    """Who is calling: a named token with a role, and the regions it is limited to (None: everywhere)."""

    name: str
    role: Role
    scope: Scope | None = None

    def sees(self, provinsi: str, kabupaten: str, kecamatan: str) -> bool:
        return self.scope is None or self.scope.admits(provinsi, kabupaten, kecamatan)

    def can(self, role: Role) -> bool:
        return self.role.rank >= role.rank


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def principal_for(engine: Engine, token: str | None, admin_token: str | None) -> Principal | None:
    """The viewer/operator/admin behind a token, or None. Revoked tokens are refused at once."""
    if not token:
        return None
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("admin(env)", Role.ADMIN)
    digest = hash_token(token)
    with Session(engine) as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_hash == digest)).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.name, Role(row.role), Scope.of(row.scope))


def issue_api_token(engine: Engine, *, name: str, role: Role, now: datetime, scope: Scope | None = None) -> str:
    token = new_token(role.value[:3])
    with Session(engine) as s:
        doc = scope.document() if scope is not None else None
        s.add(ApiToken(name=name, role=role.value, token_hash=hash_token(token), created_at=now, scope=doc))
        s.commit()
    return token
