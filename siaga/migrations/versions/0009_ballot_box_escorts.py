"""Ballot-box escorts on the TPS row (SPEC section 9).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:10:00.000000

`tps.escorts` is a JSON list, one item per escort that left the TPS: its boxes, escorts, where to,
when it left, when it is due and when (and where) it arrived. The partition owner keeps it with
the TPS, so an escort has the TPS's owner and its timers are rebuilt with the TPS on assignment.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tps") as batch_op:
        batch_op.add_column(sa.Column("escorts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tps") as batch_op:
        batch_op.drop_column("escorts")
