"""A person's stretches on duty in the last 24 h (SPEC section 9: hours on duty and fatigue).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 16:40:00.000000

`personnel.duty` is a JSON list of [start, end] ISO times, kept by the partition owner from the
person's check-ins (services/dispatch/rules/presence.py). Empty for everyone before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("personnel") as batch_op:
        batch_op.add_column(sa.Column("duty", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("personnel") as batch_op:
        batch_op.drop_column("duty")
