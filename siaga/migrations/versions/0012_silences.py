"""Silences (SPEC section 5): the `silence` table, and the alerts an incident has held.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:00:00.000000

`incident.held_alerts` is a JSON list of the alerts a silence held back (level, audience,
stakeholder, reminder, reason, silence id, when), released once when no silence holds the incident
any more (services/dispatch/rules/ladder.py). Empty for every incident before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "silence",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kecamatan", sa.String(), nullable=True),
        sa.Column("tps_id", sa.String(), nullable=True),
        sa.Column("category", sa.String(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("silence") as batch_op:
        batch_op.create_index(batch_op.f("ix_silence_ends_at"), ["ends_at"], unique=False)
    with op.batch_alter_table("incident") as batch_op:
        batch_op.add_column(sa.Column("held_alerts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incident") as batch_op:
        batch_op.drop_column("held_alerts")
    with op.batch_alter_table("silence") as batch_op:
        batch_op.drop_index(batch_op.f("ix_silence_ends_at"))
    op.drop_table("silence")
