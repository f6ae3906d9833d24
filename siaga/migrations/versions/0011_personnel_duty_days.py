"""The days a person has been on duty (SPEC section 9: the dashboard's days on duty per kecamatan).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 19:20:00.000000

`personnel.duty_days` is a JSON list of dates (YYYY-MM-DD, WIB) on which the person checked in on
duty, kept by the partition owner (services/dispatch/rules/presence.py). Empty for everyone before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("personnel") as batch_op:
        batch_op.add_column(sa.Column("duty_days", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("personnel") as batch_op:
        batch_op.drop_column("duty_days")
