"""Incident short codes and the roster's phone numbers (SPEC section 11, SMS and WhatsApp).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:55:00.000000

Written beside 0007 (field orders) and chained after it; it touches no table 0007 does.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Incidents opened before this revision keep no code: they cannot be named by SMS.
    with op.batch_alter_table("incident") as batch_op:
        batch_op.add_column(sa.Column("code", sa.String(length=8), nullable=True))
        batch_op.create_index(batch_op.f("ix_incident_code"), ["code"], unique=False)
    with op.batch_alter_table("personnel") as batch_op:
        batch_op.add_column(sa.Column("phone", sa.String(length=20), nullable=True))
        batch_op.create_index(batch_op.f("ix_personnel_phone"), ["phone"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("personnel") as batch_op:
        batch_op.drop_index(batch_op.f("ix_personnel_phone"))
        batch_op.drop_column("phone")
    with op.batch_alter_table("incident") as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_code"))
        batch_op.drop_column("code")
