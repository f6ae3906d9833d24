"""Command results: what a partition owner made of an operator's command (siaga.commands).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 19:21:48.001146
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "commandresult",
        sa.Column("command_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=True),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("command_id"),
    )
    with op.batch_alter_table("commandresult", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commandresult_applied_at"), ["applied_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("commandresult", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commandresult_applied_at"))

    op.drop_table("commandresult")
